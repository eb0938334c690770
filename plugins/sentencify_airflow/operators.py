"""Custom operators over MongoHook: each runs one core step for the window(s) its run covers.

Thin by design: keyword-only arguments, templated window, no I/O in __init__, the hook as a cached
property, and all the work in `sentencify.steps`, which knows nothing of Airflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timezone
from functools import cached_property
from typing import Any

from airflow.providers.mongo.hooks.mongo import MongoHook
from airflow.sdk import BaseOperator
from bson.codec_options import CodecOptions

from sentencify.settings import Settings
from sentencify.steps.runner import run_step
from sentencify.window import as_extra, windows_for_run


class MongoWindowStepOperator(BaseOperator):
    """Run core step `step` on the database of a Mongo connection, for this run's window(s)."""

    template_fields: Sequence[str] = ("start", "end", "mongo_db")
    ui_color = "#d8f0e4"
    step: str = ""

    def __init__(
        self,
        *,
        mongo_conn_id: str = "mongo_default",
        mongo_db: str | None = None,
        start: str | None = None,
        end: str | None = None,
        full: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mongo_conn_id = mongo_conn_id
        self.mongo_db = mongo_db
        self.start = start
        self.end = end
        self.full = full

    @cached_property
    def hook(self) -> MongoHook:
        return MongoHook(mongo_conn_id=self.mongo_conn_id)

    def _event_windows(self, context) -> list[list[str]]:
        windows: list[list[str]] = []
        for events in (context.get("triggering_asset_events") or {}).values():
            for event in events:
                windows += (event.extra or {}).get("windows", [])
        return windows

    def execute(self, context) -> list[dict]:
        settings = Settings.from_env()
        windows = windows_for_run(
            start=self.start or None, end=self.end or None,
            event_windows=self._event_windows(context), logical_date=context.get("logical_date"),
        )
        # MongoHook's client is not tz-aware; the steps compare and convert UTC datetimes.
        db = self.hook.get_conn().get_database(
            self.mongo_db or settings.mongo_db, codec_options=CodecOptions(tz_aware=True, tzinfo=timezone.utc)
        )
        summaries = []
        for window in windows:
            self.log.info("%s for window %s", self.step, window)
            summary = run_step(self.step, window, settings, db=db, full=self.full)
            self.log.info("%s", summary)
            summaries.append(summary)
        for outlet in self.outlets:  # the next step covers the same windows
            context["outlet_events"][outlet].extra = as_extra(windows)
        return summaries


class TrainingExamplesOperator(MongoWindowStepOperator):
    """Aggregation pipeline over the raw logs -> `training_examples` (H) and `etl_rejects`, one transaction."""

    step = "etl"


class UserProfilesOperator(MongoWindowStepOperator):
    """Raw B and C records -> `user_profile` (G) in MongoDB, published to Redis `user_profile:{user_id}`."""

    step = "profile"


class VectorMigrationOperator(MongoWindowStepOperator):
    """High-consistency examples streamed from MongoDB into Qdrant; synthetic points retire per category."""

    step = "vectors"


class AnalyticsViewsOperator(MongoWindowStepOperator):
    """Aggregates of the window from MongoDB -> the analytics PostgreSQL database (ANALYTICS_DB_URI)."""

    step = "views"

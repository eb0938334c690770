"""Custom operators over the stores' provider hooks: each runs one core step for the window(s) its run covers.

Thin by design: keyword-only arguments, templated window, no I/O in __init__, the hooks as cached
properties, and all the work in `sentencify.steps`, which knows nothing of Airflow. Every store
is reached through an Airflow connection (MongoHook, RedisHook, QdrantHook, PostgresHook), so a
secrets backend can hold them and task logs mask their passwords; a connection that is not
defined falls back to the environment (the local stack keeps Qdrant in local mode, which no
connection can describe).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from functools import cached_property
from typing import Any

from airflow.exceptions import AirflowNotFoundException
from airflow.providers.mongo.hooks.mongo import MongoHook
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.qdrant.hooks.qdrant import QdrantHook
from airflow.providers.redis.hooks.redis import RedisHook
from airflow.sdk import BaseHook, BaseOperator
from bson.codec_options import CodecOptions

from sentencify.settings import Settings
from sentencify.steps.runner import REGISTRY, Stores, run_step
from sentencify.window import as_extra, windows_for_run
from sentencify_airflow.lineage import step_datasets


class MongoWindowStepOperator(BaseOperator):
    """Run core step `step` on the database of a Mongo connection, for this run's window(s)."""

    template_fields: Sequence[str] = ("start", "end", "mongo_db")
    ui_color = "#d8f0e4"
    step: str = ""  # a name of sentencify.steps.runner.REGISTRY

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.step not in REGISTRY:
            raise TypeError(f"{cls.__name__}.step = {cls.step!r} is not a step of the registry: {', '.join(REGISTRY)}")

    def __init__(
        self,
        *,
        mongo_conn_id: str = "mongo_default",
        redis_conn_id: str = "redis_default",
        qdrant_conn_id: str = "qdrant_default",
        postgres_conn_id: str = "sentencify_analytics",
        mongo_db: str | None = None,
        start: str | None = None,
        end: str | None = None,
        full: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mongo_conn_id = mongo_conn_id
        self.redis_conn_id = redis_conn_id
        self.qdrant_conn_id = qdrant_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.mongo_db = mongo_db
        self.start = start
        self.end = end
        self.full = full

    @cached_property
    def hook(self) -> MongoHook:
        return MongoHook(mongo_conn_id=self.mongo_conn_id)

    @cached_property
    def redis_hook(self) -> RedisHook:
        return RedisHook(redis_conn_id=self.redis_conn_id)

    @cached_property
    def qdrant_hook(self) -> QdrantHook:
        return QdrantHook(conn_id=self.qdrant_conn_id)

    @cached_property
    def postgres_hook(self) -> PostgresHook:
        return PostgresHook(postgres_conn_id=self.postgres_conn_id)

    def stores(self, settings: Settings) -> Stores:
        """The hooks' clients where the connection is defined, else the environment's."""
        env = Stores.from_settings(settings)

        def pick(conn_id: str, from_hook, fallback):
            try:
                BaseHook.get_connection(conn_id)
            except AirflowNotFoundException:
                self.log.info("connection %s is not defined: using the environment's settings", conn_id)
                return fallback
            return from_hook

        return Stores(
            redis=pick(self.redis_conn_id, lambda: self.redis_hook.get_conn(), env.redis),
            qdrant=pick(self.qdrant_conn_id, lambda: self.qdrant_hook.get_conn(), env.qdrant),
            analytics=pick(self.postgres_conn_id, lambda: self.postgres_hook.get_conn(), env.analytics),
        )

    def _event_windows(self, context) -> list[list[str]]:
        windows: list[list[str]] = []
        for events in (context.get("triggering_asset_events") or {}).values():
            for event in events:
                windows += (event.extra or {}).get("windows", [])
        return windows

    def execute(self, context) -> list[dict]:
        settings = Settings.from_env()
        windows = windows_for_run(
            start=self.start or None,
            end=self.end or None,
            event_windows=self._event_windows(context),
            logical_date=context.get("logical_date"),
        )
        # MongoHook's client is not tz-aware; the steps compare and convert UTC datetimes.
        db = self.hook.get_conn().get_database(
            self.mongo_db or settings.mongo_db, codec_options=CodecOptions(tz_aware=True, tzinfo=UTC)
        )
        stores = self.stores(settings)
        summaries = []
        for window in windows:
            self.log.info("%s for window %s", self.step, window)
            summary = run_step(self.step, window, settings, db=db, full=self.full, stores=stores)
            self.log.info("%s", summary)
            summaries.append(summary)
        for outlet in self.outlets:  # the next step covers the same windows
            context["outlet_events"][outlet].extra = as_extra(windows)
        return summaries

    def get_openlineage_facets_on_complete(self, task_instance):
        """What the step read and wrote, for apache-airflow-providers-openlineage (names: lineage.py)."""
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = step_datasets(self.step, Settings.from_env(), self.mongo_db)
        return OperatorLineage(
            inputs=[Dataset(namespace=ns, name=name) for ns, name in inputs],
            outputs=[Dataset(namespace=ns, name=name) for ns, name in outputs],
        )


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

"""Custom operators over the stores' provider hooks: each runs one core step for the window(s) its run covers.

Thin by design: keyword-only arguments, templated window, no I/O in __init__, the hooks as cached
properties, and all the work in `sentencify.steps`, which knows nothing of Airflow. Every store
is reached through an Airflow connection (MongoHook, RedisHook, QdrantHook, PostgresHook), so a
secrets backend can hold them and task logs mask their passwords. A connection the step needs that
is not defined fails the task with its id (sentencify_airflow.connections): no environment fallback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC
from functools import cached_property
from typing import Any

from airflow.providers.mongo.hooks.mongo import MongoHook
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.qdrant.hooks.qdrant import QdrantHook
from airflow.providers.redis.hooks.redis import RedisHook
from airflow.sdk import BaseOperator
from bson.codec_options import CodecOptions

from sentencify.settings import Settings
from sentencify.steps.fence import RedisFull
from sentencify.steps.runner import REGISTRY, Stores, run_step
from sentencify.window import as_extra, step_runs, triggered_by, windows_for_run
from sentencify_airflow import connections
from sentencify_airflow.lineage import step_datasets

REDIS_REFUSED = "redis_refused"  # XCom key: the profile step's Redis refused its writes (out of memory)


def _true(value: Any) -> bool:
    """A templated flag: `{{ params.full }}` renders as the text "True"/"False"."""
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


class MongoWindowStepOperator(BaseOperator):
    """Run core step `step` on the database of a Mongo connection, for this run's window(s).

    The windows: params `start`/`end`; else those of the triggering asset events; else the hour of
    the logical date; else none, and the step processes everything not yet processed up to its
    start (a run with no logical date, or an asset event without windows; pipeline.md). `full`
    (param or an upstream full rebuild) rebuilds the step in full, and its asset event asks the next
    step to do the same: `sentencify rebuild` from the Airflow UI.
    """

    template_fields: Sequence[str] = ("start", "end", "mongo_db", "full")
    ui_color = "#d8f0e4"
    step: str = ""  # a name of sentencify.steps.runner.REGISTRY

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.step not in REGISTRY:
            raise TypeError(f"{cls.__name__}.step = {cls.step!r} is not a step of the registry: {', '.join(REGISTRY)}")

    def __init__(
        self,
        *,
        mongo_conn_id: str = connections.DEFAULT_IDS.mongo,
        redis_conn_id: str = connections.DEFAULT_IDS.redis,
        qdrant_conn_id: str = connections.DEFAULT_IDS.qdrant,
        postgres_conn_id: str = connections.DEFAULT_IDS.analytics,
        mongo_db: str | None = None,
        start: str | None = None,
        end: str | None = None,
        full: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mongo_conn_id = mongo_conn_id
        self.redis_conn_id = redis_conn_id
        self.qdrant_conn_id = qdrant_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.mongo_db = mongo_db  # default: the Mongo connection's schema
        self.start = start
        self.end = end
        self.full = full

    @property
    def conn_ids(self) -> connections.ConnIds:
        return connections.ConnIds(self.mongo_conn_id, self.redis_conn_id, self.qdrant_conn_id, self.postgres_conn_id)

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

    def database(self):
        """The Mongo connection's database, tz-aware (MongoHook's client is not; the steps compare UTC datetimes)."""
        return self.hook.get_conn().get_database(
            connections.mongo_database(self.mongo_conn_id, self.mongo_db),
            codec_options=CodecOptions(tz_aware=True, tzinfo=UTC),
        )

    def _qdrant(self, settings: Settings):
        path = connections.qdrant_local_path(connections.get(self.qdrant_conn_id, "Qdrant"))
        if path is None:
            return self.qdrant_hook.get_conn()
        from sentencify import vectorstore  # local mode (the local stack): QdrantHook cannot open a path

        return vectorstore.client(dataclasses.replace(settings, qdrant_url=None, qdrant_path=path))

    def stores(self, settings: Settings) -> Stores:
        """The hooks' clients; each raises MissingConnection naming its connection when it is not defined."""

        def redis():
            connections.get(self.redis_conn_id, "Redis")
            return self.redis_hook.get_conn()

        def analytics():
            connections.get(self.postgres_conn_id, "analytics PostgreSQL")
            return self.postgres_hook.get_conn()

        return Stores(redis=redis, qdrant=lambda: self._qdrant(settings), analytics=analytics)

    def execute(self, context) -> list[dict]:
        settings = Settings.from_env()
        # Every connection the step needs, before any work (MissingConnection names the first one
        # missing); their addresses name the lineage datasets, read here and not in the lineage
        # hook, which runs after the task and must not reach the API server again.
        self._named = connections.settings_from_connections(
            settings, connections.STEP_STORES[self.step], self.conn_ids, self.mongo_db
        )
        events = [e.extra for evs in (context.get("triggering_asset_events") or {}).values() for e in evs]
        asked = triggered_by(events)
        windows = windows_for_run(
            start=self.start or None,
            end=self.end or None,
            event_windows=asked.windows,
            logical_date=context.get("logical_date"),
        )
        full = _true(self.full) or asked.full
        runs = step_runs(windows, unwindowed=asked.unwindowed, full=full)
        db = self.database()
        stores = self.stores(settings)
        summaries = []
        for window in runs:
            what = "everything not yet processed (no window)" if window is None else f"window {window}"
            self.log.info("%s%s for %s", self.step, " (full rebuild)" if full else "", what)
            try:
                summary = run_step(self.step, window, settings, db=db, full=full, stores=stores)
            except RedisFull as exc:
                # MongoDB was published: the steps after this one go on (they do not write Redis);
                # the DAG's next task fails with this error (RedisRefusalOperator).
                self.log.error("%s", exc)
                context["ti"].xcom_push(key=REDIS_REFUSED, value=str(exc))
                summary = {"redis_refused": str(exc)}
            self.log.info("%s", summary)
            summaries.append(summary)
        extra = as_extra(windows if not full else [], unwindowed=None in runs, full=full)
        for outlet in self.outlets:  # the next step covers the same windows
            context["outlet_events"][outlet].extra = extra
        return summaries

    def get_openlineage_facets_on_complete(self, task_instance):
        """What the step read and wrote, for apache-airflow-providers-openlineage (names: lineage.py),
        in the stores and database of this operator's connections (as `execute` read them)."""
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        named = getattr(self, "_named", None)
        if named is None:  # the task failed before reading its connections: nothing to report
            return OperatorLineage()
        inputs, outputs = step_datasets(self.step, named)
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


class VerifyStoresOperator(MongoWindowStepOperator):
    """`sentencify verify --repair` over the connections' stores (pipeline.md, "Derived stores agree
    with MongoDB"): every derived store compared with MongoDB, each step that differs repaired by a
    full run. Drift found (even when repaired) counts `sentencify.store_drift` per store and raises
    the deadline notifier's alarm (defaults.DEADLINE_NOTIFIER); the task fails only when a repair
    left a store differing."""

    step = "etl"  # the registry check of the base class; this operator covers every step
    template_fields: Sequence[str] = ("mongo_db", "repair")

    def __init__(self, *, repair: bool | str = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.repair = repair

    def execute(self, context) -> list[dict]:
        from sentencify.verify import verify

        settings = Settings.from_env()
        self._named = connections.settings_from_connections(
            settings, ("mongo", "redis", "qdrant", "analytics"), self.conn_ids, self.mongo_db
        )
        results = verify(
            settings, repair=_true(self.repair), db=self.database(), stores=self.stores(settings), echo=self.log.info
        )
        drifted = [d for r in results for d in r.found if not d.agrees]
        for d in drifted:
            self.log.warning("store drift: %s", d.line())
        if drifted:
            from sentencify_airflow.deadlines import store_drift
            from sentencify_airflow.defaults import DEADLINE_NOTIFIER

            store_drift(context, [d.store for d in drifted], DEADLINE_NOTIFIER)
        if not all(r.agrees for r in results):
            raise RuntimeError(
                "a store still differs from MongoDB after the repair: "
                + "; ".join(d.line() for r in results for d in r.final if not d.agrees)
            )
        return [{"step": r.step, "found": [d.as_dict() for d in r.found]} for r in results]


class RedisRefusalOperator(BaseOperator):
    """Fails with the profile task's Redis refusal (out of memory), if it had one.

    The profile task publishes MongoDB and emits its asset even when Redis refused its writes, so
    the steps that do not write Redis go on; this task then fails the DAG run with the one-line
    error that names the setting (pipeline.md, "Derived stores agree with MongoDB")."""

    template_fields: Sequence[str] = ("profile_task_id",)

    def __init__(self, *, profile_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.profile_task_id = profile_task_id

    def execute(self, context) -> None:
        refused = context["ti"].xcom_pull(task_ids=self.profile_task_id, key=REDIS_REFUSED)
        if refused:
            raise RedisFull(str(refused))

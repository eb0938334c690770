"""Run one step for one window, or with no window, from settings: what `sentencify run` and the
Airflow operators share.

Every run, whoever starts it: take the step's lease (runs of one step go one after the other;
sentencify.steps.lease), plan what to read from the step's progress (sentencify.steps.progress)
as of MongoDB's time when the lease was taken, do the work with every store write fenced by the
lease's token (sentencify.steps.fence), and only once every store it writes is written record
the run and move the progress, in one fenced MongoDB transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from sentencify import mongo
from sentencify.erasure import suppression
from sentencify.settings import Settings
from sentencify.steps import progress
from sentencify.steps.fence import Fence, FencedPostgres, FencedQdrant
from sentencify.steps.lease import LEASES, StepLease
from sentencify.steps.publish import RUNS, publish, run_op
from sentencify.window import Window

log = logging.getLogger("sentencify.runner")


@dataclass(frozen=True)
class Stores:
    """Where a run gets its Redis, Qdrant and analytics PostgreSQL clients: made from the settings
    (`sentencify run`), or from Airflow connections through the provider hooks (the operators).
    The runner closes each client it got once the step is done."""

    redis: Callable[[], Any]
    qdrant: Callable[[], Any]
    analytics: Callable[[], Any]  # a psycopg2 connection

    @classmethod
    def from_settings(cls, settings: Settings) -> Stores:
        def redis_client():
            import redis

            return redis.Redis.from_url(settings.redis_url)

        def qdrant_client():
            from sentencify import vectorstore

            return vectorstore.client(settings)

        def analytics_conn():
            import psycopg2

            return psycopg2.connect(settings.analytics_db_uri)

        return cls(redis_client, qdrant_client, analytics_conn)


class _Opened:
    """The clients one run opened, closed when it ends. Opening Redis or PostgreSQL raises the
    step's token there (before the run reads), so an older holder's later writes are refused.
    PostgreSQL comes wrapped so that each transaction ends with the fence's guard, Qdrant so that
    each point write checks the lease first (sentencify.steps.fence)."""

    def __init__(self, stores: Stores, fence: Fence) -> None:
        self.stores, self.fence = stores, fence
        self.opened: list[Any] = []

    def __call__(self, kind: str):
        client = getattr(self.stores, kind)()
        self.opened.append(client)
        if kind == "qdrant":
            return FencedQdrant(client, self.fence)
        if kind == "analytics":
            self.fence.claim_postgres(client)
            return FencedPostgres(client, self.fence)
        if kind == "redis":
            self.fence.claim_redis(client)
        return client

    def close(self) -> None:
        for client in self.opened:
            try:
                client.close()
            except Exception as exc:  # noqa: BLE001 (closing must not hide the step's own error)
                log.debug("closing a client failed", extra={"fields": {"error": str(exc)[:200]}})


def _etl(db: Database, plan: progress.Plan, settings: Settings, full: bool, open_: _Opened) -> dict:
    from sentencify.steps.etl import run_etl
    from sentencify.steps.examples import Rules

    rules = Rules(time_gap=timedelta(seconds=settings.etl_time_gap_s))
    return run_etl(db, plan.scan, rules, full=full, fence=open_.fence).summary()


def _profile(db: Database, plan: progress.Plan, settings: Settings, full: bool, open_: _Opened) -> dict:
    from sentencify.steps.freshness import REDIS_MARKER
    from sentencify.steps.profiles import run_profile

    r = open_("redis")
    summary = run_profile(db, r, plan.scan, fence=open_.fence, full=full)
    open_.fence.redis_set(r, {REDIS_MARKER: plan.safe_until.isoformat()})  # Redis's own freshness, next to the profiles
    return summary


def _vectors(db: Database, plan: progress.Plan, settings: Settings, full: bool, open_: _Opened) -> dict:
    from sentencify.steps.vectors import run_vectors

    return run_vectors(
        db,
        open_("qdrant"),
        plan.scan,
        collection=settings.qdrant_collection,
        dim=settings.embedding_dim,
        threshold=settings.vector_real_threshold,
        full=full,
        fence=open_.fence,
    )


def _views(db: Database, plan: progress.Plan, settings: Settings, full: bool, open_: _Opened) -> dict:
    from sentencify.steps.views import run_views

    return run_views(
        db,
        open_("analytics"),
        plan.scan,
        redis_client=open_("redis"),
        label=plan.window,
        safe_until=plan.safe_until,
        full=full,
        fence=open_.fence,
    )


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Database, progress.Plan, Settings, bool, _Opened], dict]
    help: str

    @property
    def dag_id(self) -> str:
        return f"sentencify_{self.name}"


# The one list of steps, in chain order: the CLI, the demo, the runner and the operators read it.
REGISTRY: dict[str, Step] = {
    s.name: s
    for s in (
        Step("etl", _etl, "raw logs -> training examples (H) and rejects"),
        Step("profile", _profile, "raw B and C -> user profiles (G), MongoDB and Redis"),
        Step("vectors", _vectors, "high examples -> Qdrant real points; synthetic points retire"),
        Step("views", _views, "MongoDB aggregates -> the analytics PostgreSQL views"),
    )
}
STEPS = tuple(REGISTRY)


def run_step(
    step: str, window: Window | None, settings: Settings, *, full: bool = False, db=None, stores: Stores | None = None
) -> dict:
    """Run `step` (one of STEPS) for `window`, or with no window (`None`: everything not yet processed
    up to the run's start, pipeline.md); returns the step's summary plus what was read.

    `db` and `stores` let a caller (the Airflow operators, with their hooks) pass its own clients;
    by default they are made from the settings. Raises ValueError for an unknown step, LeaseTimeout
    when another run holds the lease for hours, LeaseLost when this run lost its lease (nothing more
    was published, the run is not recorded), and whatever a store raises."""
    if step not in REGISTRY:
        raise ValueError(f"unknown step {step!r}; choose from {', '.join(STEPS)}")
    client = mongo.client(settings.mongo_uri, app_name=f"sentencify-{step}") if db is None else None
    if client is not None:
        db = client[settings.mongo_db]
    try:
        with StepLease(db, step, ttl_s=settings.lease_ttl_s) as lease:
            assert lease.fence is not None and lease.acquired_at is not None
            started_at = lease.acquired_at  # MongoDB's time: no host clock decides what is safe
            plan = progress.plan(db, step, window, look_back=progress.lookback(settings.clock_skew_s), now=started_at)
            if plan.scan != plan.window:
                log.info(
                    "also reading what earlier runs could not see",
                    extra={"fields": {"step": step, "window": str(plan.window), "reads": str(plan.scan)}},
                )
            requested = int(lease.document.get("reconcile_requests") or 0)
            reconcile = requested > int(lease.document.get("reconciled") or 0)
            if reconcile:
                log.warning(
                    "an earlier run's write may have landed after its lease was lost: reconciling everything",
                    extra={"fields": {"step": step}},
                )
            opened = _Opened(stores or Stores.from_settings(settings), lease.fence)
            try:
                with suppression.for_steps(settings):  # erased users are never published again
                    summary = REGISTRY[step].run(db, plan, settings, full or reconcile, opened)
            finally:
                opened.close()
            summary.update(
                window=str(plan.window) if not plan.unwindowed else f"none: everything up to {plan.window.end.isoformat()}",
                read=str(plan.scan),
                safe_until=plan.safe_until.isoformat(),
                unwindowed=plan.unwindowed,
            )
            # Success and progress together, fenced: a run that lost its lease records neither.
            finished = run_op(step, plan.window, summary, started_at, unwindowed=plan.unwindowed)
            ops: dict[str, list] = {RUNS: [finished], progress.PROGRESS: [progress.advance_op(step, plan)]}
            if reconcile:  # the requests this run has answered (a later one stays due)
                ops[LEASES] = [UpdateOne({"_id": step}, {"$max": {"reconciled": requested}})]
            publish(db, ops, lease.fence)
            return summary
    finally:
        if client is not None:
            client.close()

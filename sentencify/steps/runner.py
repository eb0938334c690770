"""Run one step for one window from settings: what `sentencify run` and the Airflow operators share.

Every run, whoever starts it: take the step's lease (runs of one step go one after the other),
plan what to read from the step's progress (sentencify.steps.progress), do the work, and only
once every store it writes is written record the run and move the progress.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo.database import Database

from sentencify import mongo
from sentencify.settings import Settings
from sentencify.steps import progress
from sentencify.steps.lease import StepLease
from sentencify.steps.publish import record_run
from sentencify.window import Window

log = logging.getLogger("sentencify.runner")


def _etl(db: Database, plan: progress.Plan, settings: Settings, full: bool) -> dict:
    from sentencify.steps.etl import run_etl
    from sentencify.steps.examples import Rules

    return run_etl(db, plan.scan, Rules(time_gap=timedelta(seconds=settings.etl_time_gap_s)), full=full).summary()


def _profile(db: Database, plan: progress.Plan, settings: Settings, full: bool) -> dict:
    import redis

    from sentencify.steps.profiles import run_profile

    r = redis.Redis.from_url(settings.redis_url)
    try:
        return run_profile(db, r, plan.scan)
    finally:
        r.close()


def _vectors(db: Database, plan: progress.Plan, settings: Settings, full: bool) -> dict:
    from sentencify import vectorstore
    from sentencify.steps.vectors import run_vectors

    qc = vectorstore.client(settings)
    try:
        return run_vectors(db, qc, plan.scan, collection=settings.qdrant_collection, dim=settings.embedding_dim,
                           threshold=settings.vector_real_threshold, full=full)
    finally:
        qc.close()


def _views(db: Database, plan: progress.Plan, settings: Settings, full: bool) -> dict:
    import psycopg2
    import redis

    from sentencify.steps.views import run_views

    conn = psycopg2.connect(settings.analytics_db_uri)
    r = redis.Redis.from_url(settings.redis_url)
    try:
        return run_views(db, conn, plan.scan, redis_client=r, label=plan.window)
    finally:
        conn.close()
        r.close()


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Database, progress.Plan, Settings, bool], dict]
    help: str

    @property
    def dag_id(self) -> str:
        return f"sentencify_{self.name}"


# The one list of steps, in chain order: the CLI, the demo, the runner and the operators read it.
REGISTRY: dict[str, Step] = {s.name: s for s in (
    Step("etl", _etl, "raw logs -> training examples (H) and rejects"),
    Step("profile", _profile, "raw B and C -> user profiles (G), MongoDB and Redis"),
    Step("vectors", _vectors, "high examples -> Qdrant real points; synthetic points retire"),
    Step("views", _views, "MongoDB aggregates -> the analytics PostgreSQL views"),
)}
STEPS = tuple(REGISTRY)


def run_step(step: str, window: Window, settings: Settings, *, full: bool = False, db=None) -> dict:
    """`db` lets a caller (an Airflow hook) pass its own MongoDB handle; by default one is made from settings."""
    if step not in REGISTRY:
        raise ValueError(f"unknown step {step!r}; choose from {', '.join(STEPS)}")
    own = db is None
    client = mongo.client(settings.mongo_uri, app_name=f"sentencify-{step}") if own else None
    db = client[settings.mongo_db] if own else db
    try:
        with StepLease(db, step) as lease:
            started_at = datetime.now(UTC)
            plan = progress.plan(db, step, window, look_back=progress.lookback(settings.clock_skew_s), now=started_at)
            if plan.scan != window:
                log.info("also reading what earlier runs could not see",
                         extra={"fields": {"step": step, "window": str(window), "reads": str(plan.scan)}})
            summary = REGISTRY[step].run(db, plan, settings, full)
            summary.update(window=str(window), read=str(plan.scan), safe_until=plan.safe_until.isoformat())
            lease.check()  # a run that lost its lease must not claim success
            record_run(db, step, window, summary, started_at)
            progress.advance(db, step, plan)
            return summary
    finally:
        if own:
            client.close()

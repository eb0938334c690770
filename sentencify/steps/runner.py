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
from datetime import datetime, timedelta
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from sentencify import mongo
from sentencify.erasure import suppression
from sentencify.settings import Settings
from sentencify.steps import census, progress
from sentencify.steps.fence import Fence, FencedPostgres, FencedQdrant, RedisFull
from sentencify.steps.lease import LEASES, StepLease
from sentencify.steps.pg_waits import BoundedPostgres, Waits
from sentencify.steps.publish import RUNS, publish, run_op
from sentencify.stores import versions
from sentencify.stores.batching import RequestBytes
from sentencify.window import Window

log = logging.getLogger("sentencify.runner")

CONNECT_TIMEOUT_S = 10  # opening a connection to Redis or PostgreSQL (MongoDB's client: sentencify.mongo)


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
        def redis_client() -> Any:
            import redis

            # A bounded wait on every call (STORE_TIMEOUT_S): a Redis that stops answering fails the run.
            return redis.Redis.from_url(
                settings.redis_url, socket_timeout=settings.store_timeout_s, socket_connect_timeout=CONNECT_TIMEOUT_S
            )

        def qdrant_client() -> Any:
            from sentencify import vectorstore

            return vectorstore.client(settings)

        def analytics_conn() -> Any:
            import psycopg2

            return psycopg2.connect(settings.analytics_db_uri, connect_timeout=CONNECT_TIMEOUT_S)

        return cls(redis_client, qdrant_client, analytics_conn)


_CHECK_VERSION: dict[str, Callable[[Any], None]] = {
    "redis": versions.check_redis,
    "qdrant": versions.check_qdrant,
    "analytics": versions.check_postgres,
}


class _Opened:
    """The clients one run opened, closed when it ends. Opening Redis or PostgreSQL raises the
    step's token there (before the run reads), so an older holder's later writes are refused.
    PostgreSQL comes wrapped so that each transaction begins with its lock and statement timeouts
    (sentencify.steps.pg_waits) and ends with the fence's guard, Qdrant so that each point write
    checks the lease first (sentencify.steps.fence)."""

    def __init__(self, stores: Stores, fence: Fence, waits: Waits | None = None) -> None:
        self.stores, self.fence, self.waits = stores, fence, waits or Waits()
        self.opened: list[Any] = []
        self._by_kind: dict[str, Any] = {}

    def __call__(self, kind: str) -> Any:
        """The run's client of `kind`, opened once (a local-mode Qdrant path admits one client)."""
        if kind not in self._by_kind:
            self._by_kind[kind] = self._open(kind)
        return self._by_kind[kind]

    def _open(self, kind: str) -> Any:
        client = getattr(self.stores, kind)()
        self.opened.append(client)
        _CHECK_VERSION[kind](client)  # once per process (sentencify.stores.versions)
        if kind == "qdrant":
            return FencedQdrant(client, self.fence)
        if kind == "analytics":
            self.fence.claim_postgres(client)
            return FencedPostgres(BoundedPostgres(client, self.waits), self.fence)
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


def _etl_census(db: Database, open_: _Opened, settings: Settings, before: datetime | None, start: dict | None = None) -> dict:
    from sentencify.steps.etl import EXAMPLES, REJECTS

    counts: dict[str, Any] = census.mongo_counts(db, (EXAMPLES, REJECTS))
    if start is not None and start.get("settled") is not None and start.get("settled_before") and before:
        # The end of a run: the start's raw counts carried forward by index ranges, no total again.
        settled = census.settled_moved(db, start["settled"], start["settled_before"], before)
    else:
        settled = census.settled_counts(db, before) if before else None
    return {**counts, "settled": settled, "settled_before": before}


def _profile(db: Database, plan: progress.Plan, settings: Settings, full: bool, open_: _Opened) -> dict:
    from sentencify.steps.freshness import REDIS_MARKER
    from sentencify.steps.profiles import run_profile

    r = open_("redis")
    summary = run_profile(db, r, plan.scan, fence=open_.fence, full=full, limits=RequestBytes.from_settings(settings))
    if not summary.get("redis_refused"):  # next to the profiles: Redis's own freshness, and this deployment's marker
        marker = plan.safe_until.isoformat()
        open_.fence.redis_set(r, {REDIS_MARKER: marker, census.redis_marker_key(db.name): marker})
    return summary


def _profile_census(db: Database, open_: _Opened, settings: Settings, before: datetime | None, start: dict | None = None) -> dict:
    from sentencify.steps.profiles import PROFILES

    r = open_("redis")
    marker = r.get(census.redis_marker_key(db.name))
    return {
        **census.mongo_counts(db, (PROFILES,)),
        "redis_marker": marker.decode() if marker else None,
        "evicted_keys": int(r.info("stats").get("evicted_keys", 0)),
    }


def _vectors(db: Database, plan: progress.Plan, settings: Settings, full: bool, open_: _Opened) -> dict:
    from sentencify import vectorstore
    from sentencify.steps.vectors import run_vectors
    from sentencify.stores.qdrant import collection_gone

    qc = open_("qdrant")
    name = settings.qdrant_collection

    def run(full: bool) -> dict:
        summary = run_vectors(
            db,
            qc,
            plan.scan,
            collection=name,
            dim=settings.embedding_dim,
            threshold=settings.vector_real_threshold,
            full=full,
            fence=open_.fence,
            seeding=vectorstore.seeding_of(qc, name) or _seeding(db),
        )
        qc.update_collection(name, metadata={census.QDRANT_MARKER: plan.safe_until.isoformat()})  # its own freshness
        return summary

    try:
        return run(full)
    except Exception as exc:
        if not collection_gone(exc):
            raise
        # Dropped while this run wrote it: the store is lost mid-run, so this run rebuilds it whole.
        log.warning(
            "the Qdrant collection was dropped during the run: re-materialising it", extra={"fields": {"collection": name}}
        )
        summary = run(True)
        summary["rematerialised"] = [f"collection {name} dropped during the run"]
        return summary


def _seeding(db: Database) -> Any:
    """MongoDB's copy of how the collection was seeded (`sentencify seed-synthetic`), for a
    collection that lost its own (dropped and re-created)."""
    from sentencify import vectorstore

    doc = db[census.MARKERS].find_one({"_id": "synthetic_seed"})
    return vectorstore.Seeding.from_metadata(doc) if doc else None


def _vectors_census(db: Database, open_: _Opened, settings: Settings, before: datetime | None, start: dict | None = None) -> dict:
    from sentencify import vectorstore

    qc = open_("qdrant")
    name = settings.qdrant_collection
    if not qc.collection_exists(name):
        return {"qdrant_real": 0, "qdrant_synthetic": 0, "qdrant_marker": None}
    return {
        "qdrant_real": sum(vectorstore.counts_by_category(qc, name, "real").values()),
        "qdrant_synthetic": sum(vectorstore.counts_by_category(qc, name, "synthetic").values()),
        "qdrant_marker": (qc.get_collection(name).config.metadata or {}).get(census.QDRANT_MARKER),
    }


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
        qdrant_marker=_qdrant_marker(open_.stores, settings),
    )


def _qdrant_marker(stores: Stores, settings: Settings) -> str | bool | None:
    """The vectors step's marker, read from the collection itself (freshness judged from the store);
    False when Qdrant cannot be read now (the views still run; the vectors progress stands in).
    The client is closed at once: a local-mode path admits one process, the vectors step's."""
    try:
        qc = stores.qdrant()
        try:
            if not qc.collection_exists(settings.qdrant_collection):
                return None
            return (qc.get_collection(settings.qdrant_collection).config.metadata or {}).get(census.QDRANT_MARKER)
        finally:
            qc.close()
    except Exception as exc:  # noqa: BLE001 (freshness is a report: a Qdrant away must not stop the views)
        log.warning("could not read the Qdrant marker for freshness", extra={"fields": {"error": str(exc)[:200]}})
        return False


def _views_census(db: Database, open_: _Opened, settings: Settings, before: datetime | None, start: dict | None = None) -> dict:
    from sentencify.steps.views import FACT_TABLES_ALL, transaction

    conn = open_("analytics")
    out: dict[str, Any] = {}
    with transaction(conn), conn.cursor() as cur:
        for table in FACT_TABLES_ALL:
            cur.execute("select to_regclass(%s) is not null", (f"sentencify.{table}",))
            exists = cur.fetchone()[0]
            if exists:
                cur.execute(f"select count(*) from sentencify.{table}")
            out[table] = int(cur.fetchone()[0]) if exists else None
    return out


def _recorded(summary: dict) -> dict:
    """The summary as `pipeline_runs` keeps it: drift as counts, without the ids the run printed
    (an id can name a person, and an erasure must find nothing of it: pipeline.md, "Personal data")."""
    drift = summary.get("drift")
    if not drift:
        return summary
    return {**summary, "drift": {k: {n: v for n, v in d.items() if n != "samples"} for k, d in drift.items()}}


def _changed(summary: dict) -> bool:
    """A full run changed what the steps after it read (its MongoDB collections)."""
    from sentencify.steps.etl import EXAMPLES, REJECTS
    from sentencify.steps.profiles import PROFILES

    drift = summary.get("drift") or {}
    return any(drift.get(store, {}).get(k) for store in (EXAMPLES, REJECTS, PROFILES) for k in ("missing", "extra", "different"))


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Database, progress.Plan, Settings, bool, _Opened], dict]
    help: str
    # The census of the stores the step writes (sentencify.steps.census); `before`: where the raw
    # records are counted up to; `start`: this run's census at its start (given at its end).
    census: Callable[[Database, _Opened, Settings, datetime | None, dict | None], dict]

    @property
    def dag_id(self) -> str:
        return f"sentencify_{self.name}"


# The one list of steps, in chain order: the CLI, the demo, the runner and the operators read it.
REGISTRY: dict[str, Step] = {
    s.name: s
    for s in (
        Step("etl", _etl, "raw logs -> training examples (H) and rejects", _etl_census),
        Step("profile", _profile, "raw B and C -> user profiles (G), MongoDB and Redis", _profile_census),
        Step("vectors", _vectors, "high examples -> Qdrant real points; synthetic points retire", _vectors_census),
        Step("views", _views, "MongoDB aggregates -> the analytics PostgreSQL views", _views_census),
    )
}
STEPS = tuple(REGISTRY)


def run_step(
    step: str, window: Window | None, settings: Settings, *, full: bool = False, db: Any = None, stores: Stores | None = None
) -> dict:
    """Run `step` (one of STEPS) for `window`, or with no window (`None`: everything not yet processed
    up to the run's start, pipeline.md); returns the step's summary plus what was read.

    `db` and `stores` let a caller (the Airflow operators, with their hooks) pass its own clients;
    by default they are made from the settings. Raises ValueError for an unknown step, LeaseTimeout
    when another run holds the lease for hours, LeaseLost when this run lost its lease (nothing more
    was published, the run is not recorded), and whatever a store raises."""
    if step not in REGISTRY:
        raise ValueError(f"unknown step {step!r}; choose from {', '.join(STEPS)}")
    client = (
        mongo.client(settings.mongo_uri, app_name=f"sentencify-{step}", socket_timeout_s=settings.store_timeout_s)
        if db is None
        else None
    )
    if client is not None:
        db = client[settings.mongo_db]
    try:
        versions.check_mongodb(db)  # once per process: the ETL's join needs MongoDB 5.2
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
            due = progress.full_due(db, step)  # a full rebuild asked of this step (a rebuild passed by)
            opened = _Opened(stores or Stores.from_settings(settings), lease.fence, Waits.from_settings(settings))
            try:
                was = census.left(db, step)
                found = REGISTRY[step].census(db, opened, settings, (was or {}).get("settled_before"), None)
                lost = census.differences(step, was, found)
                if lost:
                    log.warning(
                        "a store is not as this step left it: re-materialising it from MongoDB",
                        extra={"fields": {"step": step, "found": lost}},
                    )
                if due is not None and not full:
                    log.info("a full rebuild was asked of this step: running in full", extra={"fields": {"step": step}})
                run_full = full or reconcile or bool(lost) or due is not None
                with suppression.for_steps(settings):  # erased users are never published again
                    summary = REGISTRY[step].run(db, plan, settings, run_full, opened)
                # Raw records are counted up to where this run read: fewer of them later means removed.
                left_now = REGISTRY[step].census(db, opened, settings, plan.scan.end, found)
                if summary.get("redis_refused"):  # Redis is behind: the next run must not take it for ours
                    left_now["redis_marker"] = "refused: rewrite"
            finally:
                opened.close()
            if lost:
                summary["rematerialised"] = [*lost, *summary.get("rematerialised", [])]
            summary.update(
                window=str(plan.window) if not plan.unwindowed else f"none: everything up to {plan.window.end.isoformat()}",
                read=str(plan.scan),
                safe_until=plan.safe_until.isoformat(),
                unwindowed=plan.unwindowed,
            )
            # Success and progress together, fenced: a run that lost its lease records neither.
            finished = run_op(step, plan.window, _recorded(summary), started_at, unwindowed=plan.unwindowed)
            ops: dict[str, list] = {
                RUNS: [finished],
                progress.PROGRESS: [progress.advance_op(step, plan, full_done=due if run_full else None)],
                census.MARKERS: [census.record_op(step, left_now, started_at)],
            }
            if run_full and (full or _changed(summary)):  # what it rebuilt, the steps after it rebuild too
                ops[progress.PROGRESS] += progress.request_full_ops(STEPS[STEPS.index(step) + 1 :])
            if reconcile:  # the requests this run has answered (a later one stays due)
                ops[LEASES] = [UpdateOne({"_id": step}, {"$max": {"reconciled": requested}})]
            publish(db, ops, lease.fence)
            if summary.get("redis_refused"):  # MongoDB is published; Redis waits for room (the next run rewrites it)
                raise RedisFull(summary["redis_refused"])
            return summary
    finally:
        if client is not None:
            client.close()

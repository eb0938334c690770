"""Publish a step's MongoDB writes atomically and fenced; the record of a finished run in `pipeline_runs`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pymongo import ReplaceOne
from pymongo.database import Database

from sentencify.steps.fence import NO_FENCE, Fence
from sentencify.window import Window

log = logging.getLogger("sentencify.publish")

RUNS = "pipeline_runs"


def supports_transactions(db: Database) -> bool:
    """Replica sets and sharded clusters do; a standalone mongod does not."""
    hello = db.client.admin.command("hello")
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"


def run_id(step: str, window: Window, *, unwindowed: bool = False) -> str:
    """`step:<window start>` for a run labelled by a window; `step:up-to:<its start>` for a run with
    no window (pipeline.md), which covers [the step's progress, the time it started)."""
    return f"{step}:up-to:{window.end.isoformat()}" if unwindowed else f"{step}:{window.start.isoformat()}"


def run_record(step: str, window: Window, summary: dict, started_at: datetime, *, unwindowed: bool = False) -> dict:
    return {
        "_id": run_id(step, window, unwindowed=unwindowed),
        "step": step,
        "window_start": window.start,
        "window_end": window.end,
        "unwindowed": unwindowed,
        "started_at": started_at,
        "finished_at": datetime.now(UTC),
        "summary": summary,
    }


def run_op(step: str, window: Window, summary: dict, started_at: datetime, *, unwindowed: bool = False) -> ReplaceOne:
    """The write that records a successful run (the runner publishes it with the progress, fenced)."""
    doc = run_record(step, window, summary, started_at, unwindowed=unwindowed)
    return ReplaceOne({"_id": doc["_id"]}, doc, upsert=True)


def publish(db: Database, ops_by_collection: dict[str, list], fence: Fence = NO_FENCE) -> None:
    """All writes of one part of a run in one transaction (readers see all of it or none of it),
    made only while the run holds its lease: the transaction's first write is the fence's guard on
    the lease document (sentencify.steps.fence). Raises fence.LeaseLost (nothing written) once the
    lease is lost. Transient transaction errors (a write conflict with a take-over) are retried by
    pymongo's `with_transaction`; the retry's guard then refuses.

    Without transactions (a standalone server) each bulk write is preceded by a lease check: not
    atomic, and a freeze between the check and the write is not fenced."""
    ops = {c: o for c, o in ops_by_collection.items() if o}
    if not ops:
        return
    if not supports_transactions(db):
        log.warning("MongoDB is a standalone server: publishing without a transaction (not atomic); use a replica set")
        for collection, batch in ops.items():
            fence.guard_mongo(None)
            db[collection].bulk_write(batch, ordered=True)
        return

    def write(session: Any) -> None:
        fence.guard_mongo(session)
        for collection, batch in ops.items():
            db[collection].bulk_write(batch, ordered=True, session=session)

    with db.client.start_session() as session:
        session.with_transaction(write)

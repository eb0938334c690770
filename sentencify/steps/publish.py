"""Publish a step's output atomically, and record a finished run in `pipeline_runs`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pymongo import ReplaceOne
from pymongo.database import Database

from sentencify.window import Window

log = logging.getLogger("sentencify.publish")

RUNS = "pipeline_runs"


def supports_transactions(db: Database) -> bool:
    """Replica sets and sharded clusters do; a standalone mongod does not."""
    hello = db.client.admin.command("hello")
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"


def run_id(step: str, window: Window) -> str:
    return f"{step}:{window.start.isoformat()}"


def run_record(step: str, window: Window, summary: dict, started_at: datetime) -> dict:
    return {
        "_id": run_id(step, window),
        "step": step,
        "window_start": window.start,
        "window_end": window.end,
        "started_at": started_at,
        "finished_at": datetime.now(UTC),
        "summary": summary,
    }


def _run_op(step: str, window: Window, summary: dict, started_at: datetime) -> ReplaceOne:
    return ReplaceOne({"_id": run_id(step, window)}, run_record(step, window, summary, started_at), upsert=True)


def record_run(db: Database, step: str, window: Window, summary: dict, started_at: datetime) -> None:
    """The run of `step` labelled `window` succeeded (its outputs are all written)."""
    db[RUNS].bulk_write([_run_op(step, window, summary, started_at)])


def publish(db: Database, ops_by_collection: dict[str, list]) -> None:
    """All writes of one part of a run in one transaction (readers see all of it or none of it).

    The run record is the runner's, written once every store of the step is written."""
    ops = {c: o for c, o in ops_by_collection.items() if o}
    if not ops:
        return
    client = db.client
    if not supports_transactions(db):
        log.warning("MongoDB is a standalone server: publishing without a transaction (not atomic); use a replica set")
        for collection, batch in ops.items():
            db[collection].bulk_write(batch, ordered=True)
        return
    with client.start_session() as session, session.start_transaction():
        for collection, batch in ops.items():
            db[collection].bulk_write(batch, ordered=True, session=session)

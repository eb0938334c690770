"""Is each derived store the one its step left? A cheap census of the store, compared at the start
of every run with the one the step recorded at the end of its last successful run.

pipeline.md, "Derived stores agree with MongoDB": "a step recognises a store that it did not leave
as it was (it keeps a marker of its own inside each store) and re-materialises the whole store
from MongoDB, not only the window; the run says so". Per step, what is counted (never read whole):
- etl: the documents of `training_examples` and `etl_rejects`, and of each raw collection the
  records ingested before the step's progress (`settled`): fewer than last time means raw records
  were removed, so some examples lost their support;
- profile: the `user_profile` documents; Redis's marker (the progress the step wrote next to the
  profiles; gone when Redis was emptied, restarted without persistence, or restored from an older
  snapshot) and Redis's count of evicted keys (`maxmemory` evicting);
- vectors: the real and synthetic points, and the marker in the collection's metadata (gone
  when the collection was dropped or re-created by someone else);
- views: the rows of each fact table (a table truncated, dropped or emptied by hand).
A store the step writes alone never changes between its runs; any difference is a loss, and the
run becomes a full one (`full` in the runner), whose summary says why (`rematerialised`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pymongo import ReplaceOne
from pymongo.database import Database

from sentencify.schemas import EVENT_TYPES

log = logging.getLogger("sentencify.census")

MARKERS = "store_markers"  # MongoDB: per step, the census its last successful run left
CHECKS = "store_checks"  # MongoDB: the last `sentencify verify` of each derived store (sentencify.verify)
QDRANT_MARKER = "sentencify_safe_until"  # in the collection's metadata: the vectors step's progress
_STABLE_TRIES = 3


def redis_marker_key(scope: str) -> str:
    """The profile step's marker in Redis, per MongoDB database (deployments may share a Redis)."""
    return f"sentencify:store_marker:{scope}:user_profile"


def left(db: Database, step: str) -> dict[str, Any] | None:
    """The census the step's last successful run recorded (None: none yet)."""
    doc = db[MARKERS].find_one({"_id": step})
    return None if doc is None else doc.get("census")


def record_op(step: str, census: dict[str, Any], at: datetime) -> ReplaceOne:
    """The write that records a run's census (the runner publishes it with the run, fenced)."""
    return ReplaceOne({"_id": step}, {"_id": step, "census": census, "recorded_at": at}, upsert=True)


def mongo_counts(db: Database, collections: Iterable[str]) -> dict[str, int]:
    """Documents per collection (the server's count from its metadata: no scan on MongoDB)."""
    return {c: db[c].estimated_document_count() for c in collections}


def settled_counts(db: Database, before: datetime) -> dict[str, int] | None:
    """Per raw collection, the records ingested before `before` (where an ETL run read up to), as
    the total less the ones at or after it, which is an index range over recent records only. A
    record stamped earlier that became visible later only adds to a later count: fewer means
    removed. None when records kept arriving between the two counts in every try (the census is
    then skipped: never a false alarm)."""
    out: dict[str, int] = {}
    for et in EVENT_TYPES:
        coll = db[et.name]
        for _ in range(_STABLE_TRIES):
            # The recent range (an index range) before and after the total (one metadata read on
            # MongoDB, a scan on the local server): equal, so nothing arrived in between.
            recent = coll.count_documents({"ingested_at": {"$gte": before}})
            total = coll.estimated_document_count()
            if coll.count_documents({"ingested_at": {"$gte": before}}) == recent:
                out[et.name] = total - recent
                break
        else:
            return None
    return out


def settled_moved(db: Database, settled: dict[str, int] | None, since: datetime, until: datetime) -> dict[str, int] | None:
    """`settled` (counted before `since`) carried to `until` by the records ingested between the
    two: an index range per collection, no total counted again (the run's end census)."""
    if settled is None:
        return None
    low, high, sign = (since, until, 1) if since <= until else (until, since, -1)
    return {name: n + sign * db[name].count_documents({"ingested_at": {"$gte": low, "$lt": high}}) for name, n in settled.items()}


def differences(step: str, was: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """Why the store is not the one the step left: one phrase per difference (empty: the same).
    `was` None (no run recorded one): a store that holds anything is not known to be ours."""
    if was is None:
        held = {k: v for k, v in now.items() if isinstance(v, int) and v}
        return [f"no census recorded, but {k} holds {v}" for k, v in sorted(held.items())]
    out = []
    for key, value in sorted(now.items()):
        before = was.get(key)
        if key == "settled":
            if value is None or before is None:
                continue  # not measurable this time (records arriving), or no earlier figure
            out += [
                f"{c}: {before[c] - n} raw records removed" for c, n in sorted(value.items()) if c in before and n < before[c]
            ]
        elif key == "settled_before":
            continue
        elif key == "evicted_keys":
            if before is not None and value is not None and value != before:
                out.append(f"Redis evicted {value - before if value > before else 'some'} keys (maxmemory)")
        elif value != before:
            out.append(f"{key}: {_shown(value)} now, {_shown(before)} when the step last left it")
    return out


def _shown(value: Any) -> str:
    return "absent" if value is None else str(value)

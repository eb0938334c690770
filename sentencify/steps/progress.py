"""Each step's progress: which records a run must read so nothing ingested is ever left out.

A step's progress is `safe_until`: every record with `ingested_at` before it was visible to a
successful run of the step, and processed. A run labelled [start, end) reads every record with
`ingested_at` in [min(start, safe_until), end): its own hour, plus whatever earlier runs could not
have seen (hours that had no successful run, records that became visible late). A run with no
window (pipeline.md) reads [safe_until, the time it started). On success it moves `safe_until`
(never back) to the earliest of:
- its end;
- the time it started reading minus the look-back (`lookback`): a record stamped earlier than that
  was visible when the run read. The look-back is CLOCK_SKEW_S (how far a consumer's clock may lag)
  plus sentencify.mongo.VISIBILITY_BOUND_S (the longest time from a consumer's `ingested_at` stamp
  until that write is visible or abandoned for good). The start is MongoDB's time when the run took
  its lease, so the run host's own clock plays no part;
- its upstream steps' `safe_until`: a step never claims what its inputs do not yet hold.
docs/design.md weighs this against consumer offsets and change streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo import UpdateOne
from pymongo.database import Database

from sentencify.mongo import VISIBILITY_BOUND_S
from sentencify.window import Window

PROGRESS = "pipeline_progress"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # no progress yet: everything ever ingested is new
# What each step reads besides the raw logs (its progress cannot pass theirs).
UPSTREAM: dict[str, tuple[str, ...]] = {"etl": (), "profile": (), "vectors": ("etl",), "views": ("etl", "profile")}


def lookback(clock_skew_s: float) -> timedelta:
    """CLOCK_SKEW_S + VISIBILITY_BOUND_S: how far before its start a run cannot trust it has seen everything."""
    return timedelta(seconds=clock_skew_s + VISIBILITY_BOUND_S)


@dataclass(frozen=True)
class Plan:
    window: Window  # the run's label: the hour it stands for ([progress, start) for a run with no window)
    scan: Window  # what it reads, by `ingested_at`
    safe_until: datetime  # the progress it may record once every store is written
    unwindowed: bool = False  # a run with no window: everything not yet processed up to its start


def safe_until(db: Database, step: str) -> datetime | None:
    doc = db[PROGRESS].find_one({"_id": step})
    return None if doc is None else doc.get("safe_until")


def plan(db: Database, step: str, window: Window | None, *, look_back: timedelta, now: datetime | None = None) -> Plan:
    """Call when the run starts reading (under the step's lease); `now`: when it started (MongoDB's
    time from the lease). `window=None`: a run with no window, labelled and reading
    [the step's progress, now)."""
    now = now or datetime.now(UTC)
    since = safe_until(db, step) or EPOCH
    unwindowed = window is None
    if window is None:
        window = Window(since, max(now, since + timedelta(microseconds=1)))
    scan = Window(min(window.start, since), window.end)
    safe = min(window.end, now - look_back)
    for upstream in UPSTREAM[step]:
        safe = min(safe, safe_until(db, upstream) or EPOCH)
    return Plan(window, scan, safe, unwindowed)


def advance_op(step: str, plan: Plan, now: datetime | None = None, full_done: int | None = None) -> UpdateOne:
    """The write that records the run's progress; `$max`, so a run of an old hour never moves it back.
    `full_done`: the full-rebuild requests this (full) run answered (`full_due`)."""
    maxed: dict = {"safe_until": plan.safe_until}
    if full_done is not None:
        maxed["full_done"] = full_done
    return UpdateOne({"_id": step}, {"$max": maxed, "$set": {"updated_at": now or datetime.now(UTC)}}, upsert=True)


# A full rebuild asked of a step is kept here until the step has done it (pipeline.md, "Derived
# stores agree with MongoDB": "kept in MongoDB until every step downstream has done it, whether or
# not its DAG was running when the request passed"). Counters, so a request made during a run
# stays due after it: `full_requested` grows with each request, `full_done` takes the value the
# answering run read when it started.


def full_due(db: Database, step: str) -> int | None:
    """The request count a run of `step` answers by running in full, or None when none is due."""
    doc = db[PROGRESS].find_one({"_id": step}, {"full_requested": 1, "full_done": 1}) or {}
    requested = int(doc.get("full_requested") or 0)
    return requested if requested > int(doc.get("full_done") or 0) else None


def request_full_ops(steps: tuple[str, ...] | list[str]) -> list[UpdateOne]:
    """The writes that ask each of `steps` for a full rebuild at its next run."""
    return [UpdateOne({"_id": s}, {"$inc": {"full_requested": 1}}, upsert=True) for s in steps]

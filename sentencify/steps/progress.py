"""Each step's progress: which records a run must read so nothing ingested is ever left out.

A step's progress is `safe_until`: every record with `ingested_at` before it was visible to a
successful run of the step, and processed. A run labelled [start, end) reads every record with
`ingested_at` in [min(start, safe_until), end): its own hour, plus whatever earlier runs could not
have seen (hours that had no successful run, records that became visible late). On success it
moves `safe_until` (never back) to the earliest of:
- its end;
- the time it started reading minus the look-back: a record stamped earlier than that was
  visible when the run read (`ingested_at` lags the write by at most the consumer's write timeout,
  and the consumer's clock by at most CLOCK_SKEW_S);
- its upstream steps' `safe_until`: a step never claims what its inputs do not yet hold.
docs/design.md weighs this against consumer offsets and change streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo.database import Database

from sentencify.mongo import VISIBILITY_BOUND_S
from sentencify.window import Window

PROGRESS = "pipeline_progress"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # no progress yet: everything ever ingested is new
# What each step reads besides the raw logs (its progress cannot pass theirs).
UPSTREAM: dict[str, tuple[str, ...]] = {"etl": (), "profile": (), "vectors": ("etl",), "views": ("etl", "profile")}


def lookback(clock_skew_s: float) -> timedelta:
    return timedelta(seconds=clock_skew_s + VISIBILITY_BOUND_S)


@dataclass(frozen=True)
class Plan:
    window: Window  # the run's label: the hour it stands for
    scan: Window  # what it reads, by `ingested_at`
    safe_until: datetime  # the progress it may record once every store is written


def safe_until(db: Database, step: str) -> datetime | None:
    doc = db[PROGRESS].find_one({"_id": step})
    return None if doc is None else doc["safe_until"]


def plan(db: Database, step: str, window: Window, *, look_back: timedelta, now: datetime | None = None) -> Plan:
    """Call when the run starts reading (under the step's lease)."""
    now = now or datetime.now(UTC)
    since = safe_until(db, step) or EPOCH
    scan = Window(min(window.start, since), window.end)
    safe = min(window.end, now - look_back)
    for upstream in UPSTREAM[step]:
        safe = min(safe, safe_until(db, upstream) or EPOCH)
    return Plan(window, scan, safe)


def advance(db: Database, step: str, plan: Plan, now: datetime | None = None) -> None:
    """Record the run's progress; `$max`, so a run of an old hour never moves it back."""
    db[PROGRESS].update_one(
        {"_id": step},
        {"$max": {"safe_until": plan.safe_until}, "$set": {"updated_at": now or datetime.now(UTC)}},
        upsert=True,
    )

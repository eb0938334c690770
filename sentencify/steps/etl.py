"""Step 1: training examples (H) for the sessions a window touches, rebuilt from all their records.

Gather: the window's touched sessions (by `ingested_at` range), then their records joined by the
database: the aggregation pipeline of `sentencify.steps.join` (earliest A; B, C, D, E and the
point-in-time F by indexed `$lookup`s), the same pipeline for the full rebuild over every session;
sessions with B or C but no A come back as orphans. Decide: `examples.build` (pure). Publish: one
transaction per window (up to MAX_SESSIONS_PER_TRANSACTION sessions), writing only what changed,
so a failure leaves readers the previous state, never half a window.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymongo import DeleteMany, InsertOne, ReplaceOne, UpdateOne
from pymongo.database import Database

from sentencify.erasure.suppression import suppressed_users
from sentencify.mongo import find_in
from sentencify.steps import examples, join
from sentencify.steps.examples import JoinedSession
from sentencify.steps.fence import NO_FENCE, Fence
from sentencify.steps.join import F  # noqa: F401  (re-exported: the bench and tests name it from here)
from sentencify.steps.publish import publish
from sentencify.steps.quarantine import Quarantined, bisect, settle
from sentencify.steps.touched import chunks, touched_sessions
from sentencify.stores import mongodb
from sentencify.window import Window

log = logging.getLogger("sentencify.etl")

EXAMPLES = "training_examples"
REJECTS = "etl_rejects"

Orphans = dict[str, tuple[list[dict], list[dict]]]  # session without an A -> (its B, its C)


@dataclass
class EtlResult:
    window: Window
    touched: int = 0
    flags: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    rejects: Counter = field(default_factory=Counter)
    written: int = 0  # examples and rejects that changed (the rest were already as computed)
    quarantined: Counter = field(default_factory=Counter)  # sessions not published, by reason

    def summary(self) -> dict:
        return {
            "window": str(self.window),
            "touched_sessions": self.touched,
            "examples": dict(self.flags),
            "low_reasons": dict(self.reasons),
            "rejects": dict(self.rejects),
            "written": self.written,
            **({"quarantined": dict(self.quarantined)} if self.quarantined else {}),
        }


def gather(db: Database, session_ids: list[str], refused: join.Refused | None = None) -> tuple[list[JoinedSession], Orphans]:
    """These sessions joined by the aggregation pipeline (`join.gather`), and their orphans."""
    return join.gather(db, session_ids, refused)


def scan_all(db: Database, refused: join.Refused | None = None) -> tuple[list[JoinedSession], Orphans]:
    """Every session joined by the same pipeline, for full rebuilds (`join.gather_all`)."""
    return join.gather_all(db, refused)


def _quarantine_refused(refused: join.Refused, quarantined: Quarantined | None) -> None:
    """Sessions whose join MongoDB refused (one session's records past 16 MB once joined)."""
    for session, exc in refused:
        if quarantined is not None:
            quarantined.add(session, "join_refused", exc)


def decide(
    joined: list[JoinedSession], orphans: Orphans, rules: examples.Rules, now: datetime, quarantined: Quarantined | None = None
):
    """Examples and rejects (pure). A session whose records the rules cannot be applied to (a value
    of a type no rule expects, left by an older consumer) is added to `quarantined` (re-raised
    without one)."""
    built: list[examples.Example] = []
    rejected: list[examples.Reject] = []
    for session in joined:
        try:
            outcome = examples.build(session, rules, now)
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as exc:
            if quarantined is None:
                raise
            quarantined.add(session["_id"], "example_not_computable", exc)
            continue
        if isinstance(outcome, examples.Example):
            built.append(outcome)
        else:
            rejected.append(outcome)
    for s, (b, c) in orphans.items():
        rejected.append(examples.orphan(s, b, c, now))
    return built, rejected


def build_window(
    db: Database, session_ids: set[str], rules: examples.Rules, now: datetime, quarantined: Quarantined | None = None
):
    """Examples and rejects for these sessions, computed from all their records (nothing written).
    A session whose join MongoDB refuses is quarantined (propagated without `quarantined`)."""
    refused: join.Refused | None = [] if quarantined is not None else None
    joined, orphans = gather(db, sorted(session_ids), refused)
    _quarantine_refused(refused or [], quarantined)
    return decide(joined, orphans, rules, now, quarantined)


# Sessions gathered and decided together (one pass of the join per chunk); each chunk is published
# in transactions of at most `stores.mongodb.TRANSACTION_DOCS` sessions, each session whole.
MAX_SESSIONS_PER_TRANSACTION = 20_000


def run_etl(
    db: Database,
    window: Window,
    rules: examples.Rules | None = None,
    now: datetime | None = None,
    full: bool = False,
    fence: Fence = NO_FENCE,
) -> EtlResult:
    """`full`: rebuild every session (the join pipeline over all of them), not just the window's. `fence`: the
    run's lease token (sentencify.steps.fence); each transaction is published only while it holds."""
    rules = rules or examples.Rules()
    now = now or datetime.now(UTC)
    quarantined = Quarantined("etl")
    if full:
        refused: join.Refused = []
        joined, orphans = scan_all(db, refused)
        _quarantine_refused(refused, quarantined)
        by_session = {j["_id"]: j for j in joined}
        sessions = sorted(set(by_session) | set(orphans))
        old = Existing.scan(db)
    else:
        sessions = sorted(touched_sessions(db, window))
    result = EtlResult(window, touched=len(sessions))
    for part in chunks(sessions, MAX_SESSIONS_PER_TRANSACTION):
        if full:
            built, rejected = decide(
                [by_session[s] for s in part if s in by_session],
                {s: orphans[s] for s in part if s in orphans},
                rules,
                now,
                quarantined,
            )
        else:
            built, rejected = build_window(db, set(part), rules, now, quarantined)
        _publish(db, built, rejected, old if full else Existing.fetch(db, part), result, quarantined, fence)
    settle(db, quarantined, None if full else sessions, now, fence)
    result.quarantined.update(quarantined.counts())
    log.info("etl done", extra={"fields": result.summary()})
    return result


def _publish(
    db: Database,
    built: list[examples.Example],
    rejected: list[examples.Reject],
    existing: Existing,
    result: EtlResult,
    quarantined: Quarantined,
    fence: Fence,
) -> None:
    """Publish in transactions of at most TRANSACTION_DOCS sessions; a session MongoDB refuses (an
    example over 16 MB) is found by bisection and quarantined, the others are published."""
    erased = suppressed_users(db, (ex.doc.get("user_id") for ex in built))  # erased while this run read them
    examples_by = {ex.doc["_id"]: ex for ex in built if ex.doc.get("user_id") not in erased}
    rejects_by = {rej.doc["_id"]: rej for rej in rejected}

    def write(sessions: list[str]) -> None:
        mine = [examples_by[s] for s in sessions if s in examples_by]
        theirs = [rejects_by[s] for s in sessions if s in rejects_by]
        ops = _ops(mine, theirs, existing)
        publish(db, ops, fence)
        result.written += sum(len(o) for o in ops.values())
        for ex in mine:
            result.flags[ex.doc["consistency_flag"]] += 1
            result.reasons.update(ex.doc["consistency_reasons"])
        for rej in theirs:
            result.rejects[rej.doc["reason"]] += 1

    for part in chunks(sorted(examples_by.keys() | rejects_by.keys()), mongodb.TRANSACTION_DOCS):
        for session, exc in bisect(part, write, mongodb.is_data_error):
            quarantined.add(session, "example_not_storable", exc)


# What a re-computation leaves alone when it comes out the same (the time it was computed).
_VOLATILE = {"processed_at": None, "detected_at": None}


def _same(old: dict | None, new: dict) -> bool:
    return old is not None and {**old, **_VOLATILE} == {**new, **_VOLATILE}


@dataclass
class Existing:
    """The examples and rejects already published for some sessions."""

    examples: dict[str, dict]
    rejects: dict[str, dict]

    @classmethod
    def fetch(cls, db: Database, sessions: list[str]) -> Existing:
        return cls(
            {d["_id"]: d for d in find_in(db[EXAMPLES], "_id", sessions)},
            {d["_id"]: d for d in find_in(db[REJECTS], "_id", sessions)},
        )

    @classmethod
    def scan(cls, db: Database) -> Existing:
        """All of them, read once (a full rebuild)."""
        return cls(
            {d["_id"]: d for d in db[EXAMPLES].find({}, batch_size=5000)},
            {d["_id"]: d for d in db[REJECTS].find({}, batch_size=5000)},
        )


def _ops(built: list[examples.Example], rejected: list[examples.Reject], existing: Existing) -> dict[str, list]:
    """Writes that bring these sessions' examples and rejects to what was computed: new ones
    inserted, changed ones replaced, unchanged ones left alone, stale ones deleted."""
    old_ex, old_rej = existing.examples, existing.rejects
    built_ids = {ex.doc["_id"] for ex in built}
    rejected_ids = {rej.doc["_id"] for rej in rejected}
    example_ops: list = []
    for ex in built:
        old = old_ex.get(ex.doc["_id"])
        if old is None:
            example_ops.append(InsertOne(ex.doc))
        elif not _same(old, ex.doc):
            example_ops.append(ReplaceOne({"_id": ex.doc["_id"]}, ex.doc))
    gone = sorted(rejected_ids & set(old_ex))  # a contradiction or an orphan verdict removes the example
    if gone:
        example_ops.append(DeleteMany({"_id": {"$in": gone}}))
    reject_ops: list = []
    for rej in rejected:
        old = old_rej.get(rej.doc["_id"])
        if old is None:
            reject_ops.append(InsertOne(rej.doc))
        elif not _same(old, rej.doc):  # detected_at keeps the first detection
            reject_ops.append(
                UpdateOne(
                    {"_id": rej.doc["_id"]}, {"$set": {k: v for k, v in rej.doc.items() if k not in ("_id", "detected_at")}}
                )
            )
    cleared = sorted(built_ids & set(old_rej))  # an orphan whose A arrived, a contradiction resolved
    if cleared:
        reject_ops.append(DeleteMany({"_id": {"$in": cleared}}))
    return {EXAMPLES: example_ops, REJECTS: reject_ops}

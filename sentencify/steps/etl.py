"""Step 1: training examples (H) for the sessions a window touches, rebuilt from all their records.

Gather: the window's touched sessions (by `ingested_at` range), then their records joined by the
database: the aggregation pipeline of `sentencify.steps.join` (earliest A; B, C, D, E and the
point-in-time F by indexed `$lookup`s); sessions with B or C but no A come back as orphans.
Decide: `examples.build` (pure). Publish: transactions of at most `stores.mongodb.TRANSACTION_DOCS`
sessions, writing only what changed, so a failure leaves readers each session's previous state.
A full run (`reconcile`) streams the same pipeline over every session in pages, compares with what
is stored, writes the differences, and removes what the raw records no longer support.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pymongo import DeleteMany, InsertOne, ReplaceOne, UpdateOne
from pymongo.database import Database

from sentencify import contract
from sentencify.erasure.suppression import suppressed_users
from sentencify.mongo import find_in
from sentencify.steps import examples, join
from sentencify.steps.drift import Drift, pages
from sentencify.steps.examples import JoinedSession
from sentencify.steps.fence import NO_FENCE, Fence
from sentencify.steps.join import F  # noqa: F401  (re-exported: the bench and tests name it from here)
from sentencify.steps.publish import publish
from sentencify.steps.quarantine import Quarantined, bisect, settle
from sentencify.steps.touched import A, B, C, chunks, touched_sessions
from sentencify.stores import mongodb
from sentencify.window import Window

log = logging.getLogger("sentencify.etl")

EXAMPLES = contract.TRAINING_EXAMPLES
REJECTS = contract.ETL_REJECTS
Orphans = join.Orphans


@dataclass
class EtlResult:
    window: Window
    touched: int = 0
    flags: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    rejects: Counter = field(default_factory=Counter)
    written: int = 0  # examples and rejects that changed (the rest were already as computed)
    quarantined: Counter = field(default_factory=Counter)  # sessions not published, by reason
    drift: dict[str, Drift] = field(default_factory=dict)  # a full run's or a check's differences, per store

    def summary(self) -> dict:
        return {
            "window": str(self.window),
            "touched_sessions": self.touched,
            "examples": dict(self.flags),
            "low_reasons": dict(self.reasons),
            "rejects": dict(self.rejects),
            "written": self.written,
            **({"quarantined": dict(self.quarantined)} if self.quarantined else {}),
            **({"drift": {k: d.as_dict() for k, d in self.drift.items()}} if self.drift else {}),
        }


def gather(db: Database, session_ids: list[str], refused: join.Refused | None = None) -> tuple[list[JoinedSession], Orphans]:
    """These sessions joined by the aggregation pipeline (`join.gather`), and their orphans."""
    return join.gather(db, session_ids, refused)


def _quarantine_refused(refused: join.Refused, quarantined: Quarantined | None) -> None:
    """Sessions whose join MongoDB refused (one session's records past 16 MB once joined)."""
    for session, exc in refused:
        if quarantined is not None:
            quarantined.add(session, "join_refused", exc)


def decide(
    joined: list[JoinedSession], orphans: Orphans, rules: examples.Rules, now: datetime, quarantined: Quarantined | None = None
) -> tuple[list[examples.Example], list[examples.Reject]]:
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
) -> tuple[list[examples.Example], list[examples.Reject]]:
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
    """`full`: rebuild every session, streamed in pages (`reconcile`), not just the window's.
    `fence`: the run's lease token (sentencify.steps.fence); each transaction is published only while it holds."""
    rules = rules or examples.Rules()
    now = now or datetime.now(UTC)
    if full:
        return reconcile(db, rules, now, repair=True, fence=fence, window=window)
    quarantined = Quarantined("etl")
    sessions = sorted(touched_sessions(db, window))
    result = EtlResult(window, touched=len(sessions))
    for part in chunks(sessions, MAX_SESSIONS_PER_TRANSACTION):
        built, rejected = build_window(db, set(part), rules, now, quarantined)
        _publish(db, built, rejected, Existing.fetch(db, part), result, quarantined, fence)
    settle(db, quarantined, sessions, now, fence)
    result.quarantined.update(quarantined.counts())
    log.info("etl done", extra={"fields": result.summary()})
    return result


# Sessions decided and compared per page of a full run or a check: the client's memory is bounded
# by this, not by the data (pipeline.md, "Bounds at any size").
PAGE = 1000


def reconcile(
    db: Database,
    rules: examples.Rules | None = None,
    now: datetime | None = None,
    *,
    repair: bool,
    fence: Fence = NO_FENCE,
    window: Window | None = None,
) -> EtlResult:
    """Every example and reject compared with what the raw records imply, page by page
    (pipeline.md, "Derived stores agree with MongoDB"); with `repair`, the differences are written
    (a full rebuild), else only counted (`sentencify verify`). `result.drift` holds, per store, the
    sessions missing, extra (their session lost its records) and different.

    Three streamed passes, each holding one page: sessions with an A (joined by the database),
    sessions with B or C and no A (orphans), then the examples and rejects whose session has no
    raw record left. Raises what MongoDB raises; a session the rules or MongoDB refuse is
    quarantined (settled only with `repair`)."""
    rules = rules or examples.Rules()
    now = now or datetime.now(UTC)
    quarantined = Quarantined("etl")
    result = EtlResult(window or Window(now, now + timedelta(microseconds=1)))
    result.drift = {EXAMPLES: Drift(EXAMPLES), REJECTS: Drift(REJECTS)}
    refused: join.Refused = []

    def settle_page(built: list[examples.Example], rejected: list[examples.Reject], sessions: list[str]) -> None:
        result.touched += len(sessions)
        existing = Existing.fetch(db, sessions)
        if repair:
            _publish(db, built, rejected, existing, result, quarantined, fence)
        else:
            _count(_ops(built, rejected, existing), existing, result)

    for page in pages(join.stream_all(db, refused), PAGE):
        _quarantine_refused(refused, quarantined)
        refused.clear()
        built, rejected = decide(page, {}, rules, now, quarantined)
        settle_page(built, rejected, [j["_id"] for j in page])
    _quarantine_refused(refused, quarantined)
    for ids in pages(join.session_ids(db, (B, C)), PAGE):
        with_a = join.having(db, (A,), join.SESSION, ids)
        lonely = sorted(s for s in ids if s not in with_a)
        built, rejected = decide([], join.orphans(db, lonely), rules, now, quarantined)
        settle_page(built, rejected, lonely)
    _remove_vanished(db, result, quarantined, repair, fence)
    if repair:
        settle(db, quarantined, None, now, fence)
    result.quarantined.update(quarantined.counts())
    log.info("etl full run done" if repair else "etl checked", extra={"fields": result.summary()})
    return result


def _remove_vanished(db: Database, result: EtlResult, quarantined: Quarantined, repair: bool, fence: Fence) -> None:
    """Examples and rejects whose session has no A, B or C left (raw records removed): extra.
    An example whose session still has B or C was already turned into a reject by the orphan pass."""
    for collection, has in ((EXAMPLES, (A,)), (REJECTS, (A, B, C))):
        gone: list[str] = []
        for page in pages(db[collection].find({}, {"_id": 1}, batch_size=PAGE), PAGE):
            ids = [d["_id"] for d in page]
            alive = join.having(db, has, join.SESSION, ids)
            if collection == EXAMPLES:  # no A: the orphan pass decided those that have B or C
                alive |= join.having(db, (B, C), join.SESSION, [s for s in ids if s not in alive])
            gone += [s for s in ids if s not in alive and s not in quarantined]
        result.drift[collection].add("extra", gone)
        if repair:
            for part in chunks(gone, mongodb.TRANSACTION_DOCS):
                publish(db, {collection: [DeleteMany({"_id": {"$in": part}})]}, fence)
        result.written += len(gone) if repair else 0


def _count(ops: dict[str, list], existing: Existing, result: EtlResult) -> None:
    """A check's tally of the writes a repair would make (`_ops`), per store."""
    for collection, batch in ops.items():
        drift = result.drift[collection]
        for op in batch:
            doc = op._doc if isinstance(op, InsertOne) else None
            if doc is not None:
                drift.add("missing", [doc["_id"]])
            elif isinstance(op, DeleteMany):
                drift.add("extra", op._filter["_id"]["$in"])
            else:
                drift.add("different", [op._filter["_id"]])


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
        if result.drift:
            _count(ops, existing, result)
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

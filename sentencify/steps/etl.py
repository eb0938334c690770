"""Step 1: training examples (H) for the sessions a window touches, rebuilt from all their records.

Gather: the window's touched sessions (by `ingested_at` range), then every record they need by key,
in bounded `$in` batches (`mongo.find_in`): their A, B and C by session, E by context hash, D by
correction id, and F by document for the point-in-time join, done in Python in one pass per chunk.
The full rebuild gathers the same `JoinedSession`s from one scan per collection. Decide:
`examples.build` (pure). Publish: one transaction per window (up to MAX_SESSIONS_PER_TRANSACTION
sessions), writing only what changed, so a failure leaves readers the previous state, never half
a window.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymongo import DeleteMany, InsertOne, ReplaceOne, UpdateOne
from pymongo.database import Database

from sentencify.mongo import find_in
from sentencify.steps import examples
from sentencify.steps.examples import JoinedSession
from sentencify.steps.publish import publish
from sentencify.steps.touched import A, B, C, D, E, chunks, group_by, touched_sessions
from sentencify.window import Window

log = logging.getLogger("sentencify.etl")

EXAMPLES = "training_examples"
REJECTS = "etl_rejects"
F = "document_context_cache"

_A_FIELDS = [
    "insert_id",
    "recommend_session_id",
    "created_at",
    "user_id",
    "doc_id",
    "context_hash",
    "reco_category_input",
    "reco_options",
    "P_vec",
    "P_rule",
    "P_doc",
    "doc_maturity_score",
    "applied_weight_doc",
]
_B_FIELDS = [
    "insert_id",
    "recommend_session_id",
    "source_recommend_event_id",
    "created_at",
    "target_category",
    "target_intensity",
    "target_language",
]
_C_FIELDS = [
    "insert_id",
    "recommend_session_id",
    "source_recommend_event_id",
    "created_at",
    "was_accepted",
    "selected_option_index",
    "correction_history_id",
]
_D_FIELDS = ["field", "intensity", "user_prompt", "selected_index"]
_E_FIELDS = ["embedding_v1", "embedding_version"]
_F_FIELDS = ["doc_id", "last_updated", "valid_until", "macro_category_hint"]

Orphans = dict[str, tuple[list[dict], list[dict]]]  # session without an A -> (its B, its C)


@dataclass
class EtlResult:
    window: Window
    touched: int = 0
    flags: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    rejects: Counter = field(default_factory=Counter)
    written: int = 0  # examples and rejects that changed (the rest were already as computed)

    def summary(self) -> dict:
        return {
            "window": str(self.window),
            "touched_sessions": self.touched,
            "examples": dict(self.flags),
            "low_reasons": dict(self.reasons),
            "rejects": dict(self.rejects),
            "written": self.written,
        }


def join(
    a_by: dict[str, list[dict]],
    b_by: dict[str, list[dict]],
    c_by: dict[str, list[dict]],
    e_by_hash: dict[str, dict],
    d_by_id: dict[str, dict],
    f_by_doc: dict[str, list[dict]],
    sessions: Iterable[str],
) -> tuple[list[JoinedSession], Orphans]:
    """Pure: the records of `sessions`, grouped -> one JoinedSession per session with an A, and the orphans."""
    joined: list[JoinedSession] = []
    orphans: Orphans = {}
    for s in sessions:
        a_all, b, c = a_by.get(s), b_by.get(s, []), c_by.get(s, [])
        if not a_all:
            if b or c:
                orphans[s] = (b, c)
            continue
        a = examples.earliest(a_all)
        e = e_by_hash.get(a["context_hash"])
        f = examples.in_force(f_by_doc.get(a["doc_id"], []), a["created_at"])
        d = [d_by_id[x["correction_history_id"]] for x in c if x.get("correction_history_id") in d_by_id]
        joined.append(
            JoinedSession(
                _id=s,
                a=a,
                a_ids=sorted({x["insert_id"] for x in a_all}),
                b=b,
                c=c,
                d=d,
                e=[e] if e else [],
                f=[{"_id": f["_id"], "macro_category_hint": f.get("macro_category_hint")}] if f else [],
            )
        )
    return joined, orphans


def gather(db: Database, session_ids: list[str]) -> tuple[list[JoinedSession], Orphans]:
    """Every record these sessions need, fetched by key in bounded batches, then joined."""
    a_by = group_by(find_in(db[A], "recommend_session_id", session_ids, _A_FIELDS))
    b_by = group_by(find_in(db[B], "recommend_session_id", session_ids, _B_FIELDS))
    c_by = group_by(find_in(db[C], "recommend_session_id", session_ids, _C_FIELDS))
    first = [examples.earliest(a_all) for a_all in a_by.values()]
    e_by_hash = {e["_id"]: e for e in find_in(db[E], "_id", (a["context_hash"] for a in first), _E_FIELDS)}
    d_ids = (c.get("correction_history_id") for cs in c_by.values() for c in cs)
    d_by_id = {d["_id"]: d for d in find_in(db[D], "_id", d_ids, _D_FIELDS)}
    f_by_doc = group_by(find_in(db[F], "doc_id", (a["doc_id"] for a in first), _F_FIELDS), key="doc_id")
    return join(a_by, b_by, c_by, e_by_hash, d_by_id, f_by_doc, session_ids)


def scan_all(db: Database) -> tuple[list[JoinedSession], Orphans]:
    """Every session joined from one scan of each collection: for full rebuilds, where fetching by
    key would cost more than reading everything once. Whole documents: a server-side projection
    cost the local server more than sending the fields it would drop."""
    a_by = group_by(db[A].find({}, batch_size=5000))
    b_by = group_by(db[B].find({}, batch_size=5000))
    c_by = group_by(db[C].find({}, batch_size=5000))
    wanted_e = {examples.earliest(a_all)["context_hash"] for a_all in a_by.values()}
    e_by_hash = {e["_id"]: e for e in db[E].find({}, _E_FIELDS, batch_size=5000) if e["_id"] in wanted_e}
    d_by_id = {d["_id"]: d for d in db[D].find({}, batch_size=5000)}
    f_by_doc = group_by(db[F].find({}, batch_size=5000), key="doc_id")
    return join(a_by, b_by, c_by, e_by_hash, d_by_id, f_by_doc, sorted(set(a_by) | set(b_by) | set(c_by)))


def decide(joined: list[JoinedSession], orphans: Orphans, rules: examples.Rules, now: datetime):
    built: list[examples.Example] = []
    rejected: list[examples.Reject] = []
    for session in joined:
        outcome = examples.build(session, rules, now)
        if isinstance(outcome, examples.Example):
            built.append(outcome)
        else:
            rejected.append(outcome)
    for s, (b, c) in orphans.items():
        rejected.append(examples.orphan(s, b, c, now))
    return built, rejected


def build_window(db: Database, session_ids: set[str], rules: examples.Rules, now: datetime):
    """Examples and rejects for these sessions, computed from all their records (nothing written)."""
    return decide(*gather(db, sorted(session_ids)), rules, now)


# One transaction per window up to this many sessions; a larger window (a full rebuild) is
# published in chunks of this size, each atomic, so every session is always all-or-nothing.
MAX_SESSIONS_PER_TRANSACTION = 20_000


def run_etl(
    db: Database, window: Window, rules: examples.Rules | None = None, now: datetime | None = None, full: bool = False
) -> EtlResult:
    """`full`: rebuild every session (one scan per collection), not just the window's."""
    rules = rules or examples.Rules()
    now = now or datetime.now(UTC)
    if full:
        joined, orphans = scan_all(db)
        by_session = {j["_id"]: j for j in joined}
        sessions = sorted(set(by_session) | set(orphans))
        old = Existing.scan(db)
    else:
        sessions = sorted(touched_sessions(db, window))
    result = EtlResult(window, touched=len(sessions))
    parts = list(chunks(sessions, MAX_SESSIONS_PER_TRANSACTION)) or [[]]
    for part in parts:
        if full:
            built, rejected = decide(
                [by_session[s] for s in part if s in by_session], {s: orphans[s] for s in part if s in orphans}, rules, now
            )
        else:
            built, rejected = build_window(db, set(part), rules, now)
        for ex in built:
            result.flags[ex.doc["consistency_flag"]] += 1
            result.reasons.update(ex.doc["consistency_reasons"])
        for rej in rejected:
            result.rejects[rej.doc["reason"]] += 1
        ops = _ops(built, rejected, old if full else Existing.fetch(db, part))
        result.written += sum(len(o) for o in ops.values())
        publish(db, ops)
    log.info("etl done", extra={"fields": result.summary()})
    return result


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

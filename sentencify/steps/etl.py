"""Step 1: training examples (H) for the sessions a window touches, rebuilt from all their records.

Join: one MongoDB aggregation pipeline per chunk of sessions (earliest A per session, then
$lookup of B, C, E and a point-in-time F); the chunk's D records by one `_id $in` query. Decide:
`examples.build` (pure). Publish: one transaction per window (up to MAX_SESSIONS_PER_TRANSACTION
sessions), so a failure leaves readers the previous state, never half a window.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pymongo import DeleteMany, ReplaceOne, UpdateOne
from pymongo.database import Database

from sentencify.steps import examples
from sentencify.steps.publish import publish
from sentencify.steps.touched import A, B, C, D, E, chunks, touched_sessions
from sentencify.window import Window

log = logging.getLogger("sentencify.etl")

EXAMPLES = "training_examples"
REJECTS = "etl_rejects"
F = "document_context_cache"

_B_FIELDS = ["insert_id", "source_recommend_event_id", "created_at", "target_category", "target_intensity", "target_language"]
_C_FIELDS = ["insert_id", "source_recommend_event_id", "created_at", "was_accepted", "selected_option_index", "correction_history_id"]
_D_FIELDS = ["field", "intensity", "user_prompt", "selected_index"]


def _project(fields: list[str]) -> dict:
    return {"$project": {f: 1 for f in fields}}


def session_pipeline(session_ids: list[str]) -> list[dict]:
    """A's collection -> one joined document per session that has an A."""
    at = "$$at"
    f_in_force = {
        "$and": [
            {"$lte": ["$last_updated", at]},
            {"$or": [{"$eq": [{"$ifNull": ["$valid_until", None]}, None]}, {"$gte": ["$valid_until", at]}]},
        ]
    }
    return [
        {"$match": {"recommend_session_id": {"$in": session_ids}}},
        {"$sort": {"recommend_session_id": 1, "created_at": 1, "insert_id": 1}},
        {"$group": {"_id": "$recommend_session_id", "a": {"$first": "$$ROOT"}, "a_ids": {"$addToSet": "$insert_id"}}},
        {"$lookup": {"from": B, "localField": "_id", "foreignField": "recommend_session_id", "pipeline": [_project(_B_FIELDS)], "as": "b"}},
        {"$lookup": {"from": C, "localField": "_id", "foreignField": "recommend_session_id", "pipeline": [_project(_C_FIELDS)], "as": "c"}},
        {"$lookup": {"from": E, "localField": "a.context_hash", "foreignField": "_id",
                     "pipeline": [_project(["embedding_v1", "embedding_version"])], "as": "e"}},
        # Point in time: the latest analysis in force when A was shown; a later one never leaks in.
        {"$lookup": {"from": F, "localField": "a.doc_id", "foreignField": "doc_id", "let": {"at": "$a.created_at"},
                     "pipeline": [{"$match": {"$expr": f_in_force}}, {"$sort": {"last_updated": -1, "_id": -1}},
                                  {"$limit": 1}, _project(["macro_category_hint"])], "as": "f"}},
    ]


@dataclass
class EtlResult:
    window: Window
    touched: int = 0
    flags: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    rejects: Counter = field(default_factory=Counter)

    def summary(self) -> dict:
        return {"window": str(self.window), "touched_sessions": self.touched, "examples": dict(self.flags),
                "low_reasons": dict(self.reasons), "rejects": dict(self.rejects)}


def _attach_d(joined: list[dict], d_by_id: dict[str, dict]) -> None:
    for session in joined:
        session["d"] = [d_by_id[c["correction_history_id"]] for c in session["c"] if c.get("correction_history_id") in d_by_id]


def _decide(joined: list[dict], orphans: dict[str, tuple[list, list]], rules: examples.Rules, now: datetime):
    built, rejected = [], []
    for session in joined:
        outcome = examples.build(session, rules, now)
        (built if isinstance(outcome, examples.Example) else rejected).append(outcome)
    for s, (b, c) in orphans.items():
        rejected.append(examples.orphan(s, b, c, now))
    return built, rejected


def build_window(db: Database, session_ids: set[str], rules: examples.Rules, now: datetime):
    """Examples and rejects for these sessions, computed from all their records (nothing written)."""
    built: list[examples.Example] = []
    rejected: list[examples.Reject] = []
    for part in chunks(sorted(session_ids)):
        joined = list(db[A].aggregate(session_pipeline(part), allowDiskUse=True))
        # D by key, not by $lookup: a lookup from an array path (every C's correction_history_id)
        # is not matched by every MongoDB-protocol server, and `_id $in` is one index scan anyway.
        d_ids = sorted({c["correction_history_id"] for j in joined for c in j["c"] if c.get("correction_history_id")})
        _attach_d(joined, {d["_id"]: d for d in db[D].find({"_id": {"$in": d_ids}}, _D_FIELDS)} if d_ids else {})
        with_a = {j["_id"] for j in joined}
        without_a = [s for s in part if s not in with_a]
        orphans = {}
        if without_a:
            b_by, c_by = _by_session(db, B, without_a, _B_FIELDS), _by_session(db, C, without_a, _C_FIELDS)
            orphans = {s: (b_by.get(s, []), c_by.get(s, [])) for s in without_a if b_by.get(s) or c_by.get(s)}
        b, r = _decide(joined, orphans, rules, now)
        built += b
        rejected += r
    return built, rejected


def scan_all(db: Database) -> tuple[list[dict], dict[str, tuple[list, list]]]:
    """Every session joined from one scan of each collection: for full rebuilds, where an index seek
    per session and per collection would cost far more than reading everything once."""
    first_a: dict[str, dict] = {}
    a_ids: dict[str, set] = {}
    for a in db[A].find({}):
        s = a["recommend_session_id"]
        a_ids.setdefault(s, set()).add(a["insert_id"])
        if s not in first_a or (a["created_at"], a["insert_id"]) < (first_a[s]["created_at"], first_a[s]["insert_id"]):
            first_a[s] = a
    b_by = _group(db[B].find({}, _B_FIELDS + ["recommend_session_id"]))
    c_by = _group(db[C].find({}, _C_FIELDS + ["recommend_session_id"]))
    wanted_e = {a["context_hash"] for a in first_a.values()}
    e_by = {e["_id"]: e for e in db[E].find({}, {"embedding_v1": 1, "embedding_version": 1}) if e["_id"] in wanted_e}
    f_by_doc: dict[str, list] = {}
    for f in db[F].find({}, {"doc_id": 1, "last_updated": 1, "valid_until": 1, "macro_category_hint": 1}):
        f_by_doc.setdefault(f["doc_id"], []).append(f)
    for fs in f_by_doc.values():
        fs.sort(key=lambda f: (f["last_updated"], f["_id"]), reverse=True)  # as the pipeline's $sort
    d_by_id = {d["_id"]: d for d in db[D].find({}, _D_FIELDS)}
    joined = []
    for s, a in first_a.items():
        at = a["created_at"]
        f = next((f for f in f_by_doc.get(a["doc_id"], []) if f["last_updated"] <= at
                  and (f.get("valid_until") is None or f["valid_until"] >= at)), None)
        e = e_by.get(a["context_hash"])
        joined.append({"_id": s, "a": a, "a_ids": sorted(a_ids[s]), "b": b_by.get(s, []), "c": c_by.get(s, []),
                       "e": [e] if e else [], "f": [{"_id": f["_id"], "macro_category_hint": f.get("macro_category_hint")}] if f else []})
    _attach_d(joined, d_by_id)
    orphans = {s: (b_by.get(s, []), c_by.get(s, [])) for s in set(b_by) | set(c_by) if s not in first_a}
    return joined, orphans


def _group(cursor) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for doc in cursor:
        out.setdefault(doc["recommend_session_id"], []).append(doc)
    return out


def _by_session(db: Database, collection: str, session_ids: list[str], fields: list[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for doc in db[collection].find({"recommend_session_id": {"$in": session_ids}}, fields + ["recommend_session_id"]):
        out.setdefault(doc["recommend_session_id"], []).append(doc)
    return out


def ensure_indexes(db: Database) -> None:
    db[EXAMPLES].create_index("processed_at")
    db[EXAMPLES].create_index([("consistency_flag", 1), ("created_at", 1)])
    db[EXAMPLES].create_index("user_id")
    db[REJECTS].create_index("reason")


# One transaction per window up to this many sessions; a larger window (a full rebuild) is
# published in chunks of this size, each atomic, so every session is always all-or-nothing.
MAX_SESSIONS_PER_TRANSACTION = 20_000


def run_etl(db: Database, window: Window, rules: examples.Rules | None = None, now: datetime | None = None,
            full: bool = False) -> EtlResult:
    """`full`: rebuild every session (one scan per collection), not just the window's."""
    rules = rules or examples.Rules()
    now = now or datetime.now(timezone.utc)
    ensure_indexes(db)
    if full:
        joined, orphans = scan_all(db)
        by_session = {j["_id"]: j for j in joined}
        sessions = sorted(set(by_session) | set(orphans))
    else:
        sessions = sorted(touched_sessions(db, window))
    result = EtlResult(window, touched=len(sessions))
    parts = list(chunks(sessions, MAX_SESSIONS_PER_TRANSACTION)) or [[]]
    for part in parts:
        if full:
            built, rejected = _decide([by_session[s] for s in part if s in by_session],
                                      {s: orphans[s] for s in part if s in orphans}, rules, now)
        else:
            built, rejected = build_window(db, set(part), rules, now)
        for ex in built:
            result.flags[ex.doc["consistency_flag"]] += 1
            result.reasons.update(ex.doc["consistency_reasons"])
        for rej in rejected:
            result.rejects[rej.doc["reason"]] += 1
        publish(db, _ops(built, rejected))
    log.info("etl done", extra={"fields": result.summary()})
    return result


def _ops(built: list[examples.Example], rejected: list[examples.Reject]) -> dict[str, list]:
    built_ids = [ex.doc["_id"] for ex in built]
    rejected_ids = [rej.doc["_id"] for rej in rejected]
    example_ops = [ReplaceOne({"_id": ex.doc["_id"]}, ex.doc, upsert=True) for ex in built]
    if rejected_ids:  # a contradiction removes any earlier example of the session
        example_ops.append(DeleteMany({"_id": {"$in": rejected_ids}}))
    reject_ops = [
        # detected_at keeps the first detection: re-running a window changes nothing.
        UpdateOne({"_id": rej.doc["_id"]},
                  {"$set": {k: v for k, v in rej.doc.items() if k not in ("_id", "detected_at")},
                   "$setOnInsert": {"detected_at": rej.doc["detected_at"]}}, upsert=True)
        for rej in rejected
    ]
    if built_ids:  # an orphan whose A arrived, or a contradiction resolved, is no longer rejected
        reject_ops.append(DeleteMany({"_id": {"$in": built_ids}}))
    return {EXAMPLES: example_ops, REJECTS: reject_ops}

"""Step 2: user profiles (G), recomputed from all raw B and C records of every user a window touches.

`build_profile` is the formula of pipeline.md (pure); `run_profile` gathers the records per chunk
of users, writes each chunk's `user_profile` documents in one transaction of at most
`stores.mongodb.TRANSACTION_DOCS` documents, then mirrors them to Redis `user_profile:{user_id}`
as strict JSON (`stores.redis_json`). A user whose profile cannot be built or stored is quarantined
(`user:<user_id>`, sentencify.steps.quarantine); the other users are published.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import ReplaceOne
from pymongo.database import Database

from sentencify.erasure.suppression import suppressed_users
from sentencify.mongo import find_in
from sentencify.schemas import CATEGORIES, INTENSITIES, LANGUAGES
from sentencify.schemas.derived import SCHEMA_VERSION
from sentencify.steps.examples import earliest, latest
from sentencify.steps.fence import NO_FENCE, Fence
from sentencify.steps.publish import publish
from sentencify.steps.quarantine import Quarantined, bisect, settle
from sentencify.steps.touched import A, B, C, E, chunks, group_by, touched_sessions
from sentencify.stores import mongodb, redis_json
from sentencify.window import Window

log = logging.getLogger("sentencify.profile")

PROFILES = "user_profile"
REDIS_KEY = "user_profile:{user_id}"


@dataclass
class UserRecords:
    """Everything one user's profile is computed from."""

    b: list[dict]  # the user's B records
    c: list[dict]  # the user's C records
    a_sessions: set[str]  # sessions of the user that have an A
    latest_b: dict[str, dict]  # session -> its latest B (any user), for accepted sessions
    reco_category: dict[str, str | None]  # session -> its A's reco_category_input
    embedding: dict[str, list[float]]  # session -> its context's v1 embedding (non-empty only)


def _normalise(counts: Counter, vocabulary: tuple[str, ...]) -> list[float]:
    total = sum(counts[v] for v in vocabulary)
    return [counts[v] / total if total else 0.0 for v in vocabulary]


def build_profile(user_id: str, rec: UserRecords, now: datetime) -> dict:
    category: Counter[str | None] = Counter()
    intensity: Counter[str | None] = Counter()
    language: Counter[str | None] = Counter()
    for b in rec.b:
        category[b.get("target_category")] += 1
        intensity[b.get("target_intensity")] += 1
        language[b.get("target_language")] += 1
    accepted = sorted({c["recommend_session_id"] for c in rec.c if c.get("was_accepted") is True})
    for c in rec.c:
        if c.get("was_accepted") is not True:
            continue
        run = rec.latest_b.get(c["recommend_session_id"])
        if run is not None:
            category[run.get("target_category")] += 1
            intensity[run.get("target_intensity")] += 1
            language[run.get("target_language")] += 1
        else:
            category[rec.reco_category.get(c["recommend_session_id"])] += 1
    # An accepted session without an A of this user is an orphan: not part of the rate.
    accepted_with_a = [s for s in accepted if s in rec.a_sessions]
    # An embedding with a NaN or an infinity (stored before ingestion refused them) is no embedding.
    embeddings = [rec.embedding[s] for s in accepted if rec.embedding.get(s) and redis_json.finite(rec.embedding[s])]
    # strict: v1 embeddings of different lengths (an older consumer's) have no element-wise mean;
    # the ValueError quarantines the user rather than truncating every vector to the shortest.
    mean = [redis_json.finite_mean(column) for column in zip(*embeddings, strict=True)] if embeddings else []
    return {
        "_id": user_id,
        "user_id": user_id,
        "preferred_category_vector": _normalise(category, CATEGORIES),
        "preferred_strength_vector": _normalise(intensity, INTENSITIES),
        "preferred_language_vector": _normalise(language, LANGUAGES),
        "recommend_accept_rate": len(accepted_with_a) / len(rec.a_sessions) if rec.a_sessions else 0.0,
        "paraphrase_execution_count": len(rec.b),
        "embedding_interaction_count": len(embeddings),
        "user_embedding_v1": mean,
        "updated_at": now,
        "schema_version": SCHEMA_VERSION,
    }


def touched_users(db: Database, window: Window) -> set[str]:
    sessions = sorted(touched_sessions(db, window))
    return {
        doc["user_id"]
        for collection in (A, B, C)
        for doc in find_in(db[collection], "recommend_session_id", sessions, {"user_id": 1})
        if doc.get("user_id")
    }


def gather(db: Database, user_ids: list[str]) -> dict[str, UserRecords]:
    """One query per collection for a chunk of users."""
    recs = {u: UserRecords([], [], set(), {}, {}, {}) for u in user_ids}
    b_fields = {
        "user_id": 1,
        "recommend_session_id": 1,
        "created_at": 1,
        "insert_id": 1,
        "target_category": 1,
        "target_intensity": 1,
        "target_language": 1,
    }
    for b in find_in(db[B], "user_id", user_ids, b_fields):
        recs[b["user_id"]].b.append(b)
    for c in find_in(db[C], "user_id", user_ids, {"user_id": 1, "recommend_session_id": 1, "was_accepted": 1}):
        recs[c["user_id"]].c.append(c)
    for a in find_in(db[A], "user_id", user_ids, {"user_id": 1, "recommend_session_id": 1}):
        recs[a["user_id"]].a_sessions.add(a["recommend_session_id"])

    accepted = sorted({c["recommend_session_id"] for r in recs.values() for c in r.c if c.get("was_accepted") is True})
    latest_b, reco, context = {}, {}, {}
    runs = group_by(find_in(db[B], "recommend_session_id", accepted, b_fields))
    latest_b.update({s: latest(bs) for s, bs in runs.items()})  # the ETL's rule for "the session's latest B"
    a_fields = {"recommend_session_id": 1, "created_at": 1, "insert_id": 1, "reco_category_input": 1, "context_hash": 1}
    shown = group_by(find_in(db[A], "recommend_session_id", accepted, a_fields))
    for s, a_all in shown.items():
        first = earliest(a_all)  # the ETL's rule for "the session's A"
        reco[s], context[s] = first.get("reco_category_input"), first.get("context_hash")
    # Only v1 embeddings (embedding_version v1 or absent), as the vector step keeps: another
    # version's vectors (another length, another space) would corrupt the v1 mean.
    embeddings = {
        e["_id"]: e.get("embedding_v1") or []
        for e in find_in(db[E], "_id", context.values(), {"embedding_v1": 1, "embedding_version": 1})
        if (e.get("embedding_version") or "v1") == "v1"
    }
    for r in recs.values():
        sessions = {c["recommend_session_id"] for c in r.c if c.get("was_accepted") is True}
        r.latest_b = {s: b for s in sessions if (b := latest_b.get(s)) is not None}
        r.reco_category = {s: reco.get(s) for s in sessions}
        r.embedding = {s: embeddings[context[s]] for s in sessions if context.get(s) in embeddings and embeddings[context[s]]}
    return recs


def redis_value(profile: dict) -> str:
    """Strict JSON (stores.redis_json). Raises ValueError on a non-finite number."""
    doc = {k: v for k, v in profile.items() if k != "_id"}
    doc["updated_at"] = profile["updated_at"].isoformat()
    return redis_json.dumps(doc)


def quarantine_id(user_id: str) -> str:
    """The profile step quarantines users: `session_id` = "user:<user_id>" in `pipeline_quarantine`."""
    return f"user:{user_id}"


def all_users(db: Database) -> set[str]:
    """Every user any A, B or C names (a full rebuild)."""
    users: set[str] = set()
    for collection in (A, B, C):
        users |= {d["_id"] for d in db[collection].aggregate([{"$group": {"_id": "$user_id"}}]) if d["_id"]}
    return users


def run_profile(
    db: Database, redis_client, window: Window, now: datetime | None = None, fence: Fence = NO_FENCE, full: bool = False
) -> dict:
    """`fence`: the run's lease token (sentencify.steps.fence): MongoDB and Redis writes go through it.
    `full`: recompute every user's profile, not only the window's (a rebuild)."""
    now = now or datetime.now(UTC)
    users = sorted(all_users(db) if full else touched_users(db, window))
    quarantined = Quarantined("profile")
    written = 0
    for part in chunks(users, mongodb.TRANSACTION_DOCS):
        built: list[tuple[dict, str]] = []
        for user_id, rec in gather(db, part).items():
            try:
                profile = build_profile(user_id, rec, now)
                built.append((profile, redis_value(profile)))
            except (ValueError, TypeError, ArithmeticError, KeyError) as exc:  # pure: about this user's records
                quarantined.add(quarantine_id(user_id), "profile_not_computable", exc)

        erased = suppressed_users(db, (p["user_id"] for p, _ in built))  # erased while this run read them
        built = [(p, v) for p, v in built if p["user_id"] not in erased]

        def write(items: list[tuple[dict, str]]) -> None:
            publish(db, {PROFILES: [ReplaceOne({"_id": p["_id"]}, p, upsert=True) for p, _ in items]}, fence)

        for (profile, _), error in bisect(built, write, mongodb.is_data_error):
            quarantined.add(quarantine_id(profile["user_id"]), "profile_not_storable", error)
        stored = [(p, v) for p, v in built if quarantine_id(p["user_id"]) not in quarantined]
        # Redis after MongoDB: a failure here fails the run (not recorded, progress not moved), and
        # the retry rewrites both.
        fence.redis_set(redis_client, {REDIS_KEY.format(user_id=p["user_id"]): value for p, value in stored})
        written += len(stored)
    settle(db, quarantined, None if full else (quarantine_id(u) for u in users), now, fence)
    summary = {"window": str(window), "users": written}
    if quarantined:
        summary["quarantined"] = quarantined.counts()
    log.info("profiles done", extra={"fields": summary})
    return summary

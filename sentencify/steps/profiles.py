"""Step 2: user profiles (G), recomputed from all raw B and C records of every user a window touches.

`build_profile` is the formula of pipeline.md (pure); `run_profile` gathers the records, writes
`user_profile` in one transaction and then mirrors every profile to Redis `user_profile:{user_id}`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

from pymongo import ReplaceOne
from pymongo.database import Database

from sentencify.schemas import CATEGORIES, INTENSITIES, LANGUAGES
from sentencify.schemas.derived import SCHEMA_VERSION
from sentencify.steps.examples import latest
from sentencify.steps.publish import publish
from sentencify.steps.touched import A, B, C, E, chunks, touched_sessions
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
    embedding: dict[str, list[float]]  # session -> its context embedding (non-empty only)


def _normalise(counts: Counter, vocabulary: tuple[str, ...]) -> list[float]:
    total = sum(counts[v] for v in vocabulary)
    return [counts[v] / total if total else 0.0 for v in vocabulary]


def build_profile(user_id: str, rec: UserRecords, now: datetime) -> dict:
    category, intensity, language = Counter(), Counter(), Counter()
    for b in rec.b:
        category[b.get("target_category")] += 1
        intensity[b.get("target_intensity")] += 1
        language[b.get("target_language")] += 1
    accepted = sorted({c["recommend_session_id"] for c in rec.c if c.get("was_accepted") is True})
    for c in rec.c:
        if c.get("was_accepted") is not True:
            continue
        b = rec.latest_b.get(c["recommend_session_id"])
        if b is not None:
            category[b.get("target_category")] += 1
            intensity[b.get("target_intensity")] += 1
            language[b.get("target_language")] += 1
        else:
            category[rec.reco_category.get(c["recommend_session_id"])] += 1
    # An accepted session without an A of this user is an orphan: not part of the rate.
    accepted_with_a = [s for s in accepted if s in rec.a_sessions]
    embeddings = [rec.embedding[s] for s in accepted if rec.embedding.get(s)]
    mean = [sum(column) / len(embeddings) for column in zip(*embeddings)] if embeddings else []
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
    users: set[str] = set()
    for part in chunks(sorted(touched_sessions(db, window))):
        for collection in (A, B, C):
            for doc in db[collection].aggregate([
                {"$match": {"recommend_session_id": {"$in": part}, "user_id": {"$ne": None}}},
                {"$group": {"_id": "$user_id"}},
            ]):
                users.add(doc["_id"])
    return users


def gather(db: Database, user_ids: list[str]) -> dict[str, UserRecords]:
    """One query per collection for a chunk of users."""
    recs = {u: UserRecords([], [], set(), {}, {}, {}) for u in user_ids}
    b_fields = {"user_id": 1, "recommend_session_id": 1, "created_at": 1, "insert_id": 1,
                "target_category": 1, "target_intensity": 1, "target_language": 1}
    for b in db[B].find({"user_id": {"$in": user_ids}}, b_fields):
        recs[b["user_id"]].b.append(b)
    for c in db[C].find({"user_id": {"$in": user_ids}}, {"user_id": 1, "recommend_session_id": 1, "was_accepted": 1}):
        recs[c["user_id"]].c.append(c)
    for a in db[A].aggregate([{"$match": {"user_id": {"$in": user_ids}}},
                              {"$group": {"_id": {"u": "$user_id", "s": "$recommend_session_id"}}}]):
        recs[a["_id"]["u"]].a_sessions.add(a["_id"]["s"])

    accepted = sorted({c["recommend_session_id"] for r in recs.values() for c in r.c if c.get("was_accepted") is True})
    latest_b, reco, context = {}, {}, {}
    for part in chunks(accepted):
        runs: dict[str, list[dict]] = {}
        for b in db[B].find({"recommend_session_id": {"$in": part}}, b_fields):
            runs.setdefault(b["recommend_session_id"], []).append(b)
        latest_b.update({s: latest(bs) for s, bs in runs.items()})  # the ETL's rule for "the session's latest B"
        for a in db[A].aggregate([
            {"$match": {"recommend_session_id": {"$in": part}}},
            {"$sort": {"recommend_session_id": 1, "created_at": 1, "insert_id": 1}},
            {"$group": {"_id": "$recommend_session_id", "cat": {"$first": "$reco_category_input"}, "hash": {"$first": "$context_hash"}}},
        ]):
            reco[a["_id"]], context[a["_id"]] = a["cat"], a["hash"]
    embeddings = {}
    for part in chunks(sorted(set(context.values()) - {None})):
        for e in db[E].find({"_id": {"$in": part}}, {"embedding_v1": 1}):
            embeddings[e["_id"]] = e.get("embedding_v1") or []
    for r in recs.values():
        sessions = {c["recommend_session_id"] for c in r.c if c.get("was_accepted") is True}
        r.latest_b = {s: latest_b[s] for s in sessions if s in latest_b}
        r.reco_category = {s: reco.get(s) for s in sessions}
        r.embedding = {s: embeddings[context[s]] for s in sessions if context.get(s) in embeddings and embeddings[context[s]]}
    return recs


def redis_value(profile: dict) -> str:
    doc = {k: v for k, v in profile.items() if k != "_id"}
    doc["updated_at"] = profile["updated_at"].isoformat()
    return json.dumps(doc, separators=(",", ":"))


def run_profile(db: Database, redis_client, window: Window, now: datetime | None = None) -> dict:
    now = now or datetime.now(timezone.utc)
    users = sorted(touched_users(db, window))
    profiles: list[dict] = []
    for part in chunks(users, 1000):
        for user_id, rec in gather(db, part).items():
            profiles.append(build_profile(user_id, rec, now))
    summary = {"window": str(window), "users": len(profiles)}
    publish(db, {PROFILES: [ReplaceOne({"_id": p["_id"]}, p, upsert=True) for p in profiles]})
    # Redis after MongoDB: a failure here fails the run (not recorded, progress not moved), and the
    # retry rewrites both.
    for part in chunks(profiles, 1000):
        pipe = redis_client.pipeline(transaction=False)
        for p in part:
            pipe.set(REDIS_KEY.format(user_id=p["user_id"]), redis_value(p))
        pipe.execute()
    log.info("profiles done", extra={"fields": summary})
    return summary

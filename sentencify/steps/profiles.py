"""Step 2: user profiles (G), recomputed from all raw B and C records of every user a window touches.

`build_profile` is the formula of pipeline.md (pure); `run_profile` gathers the records per chunk
of users, writes each chunk's `user_profile` documents in one transaction of at most
`stores.mongodb.TRANSACTION_DOCS` documents, then mirrors them to Redis `user_profile:{user_id}`
as strict JSON (`stores.redis_json`). A user whose profile cannot be built or stored is quarantined
(`user:<user_id>`, sentencify.steps.quarantine); the other users are published.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import DeleteMany, ReplaceOne
from pymongo.database import Database

from sentencify import contract
from sentencify.erasure.suppression import suppressed_users
from sentencify.mongo import find_in
from sentencify.schemas import CATEGORIES, INTENSITIES, LANGUAGES
from sentencify.schemas.derived import SCHEMA_VERSION
from sentencify.steps import join
from sentencify.steps.drift import Drift, pages
from sentencify.steps.examples import earliest, latest
from sentencify.steps.fence import NO_FENCE, Fence, RedisFull
from sentencify.steps.publish import publish
from sentencify.steps.quarantine import Quarantined, bisect, settle
from sentencify.steps.touched import A, B, C, E, chunks, group_by, touched_sessions
from sentencify.stores import batching, mongodb, redis_json
from sentencify.window import Window

log = logging.getLogger("sentencify.profile")

PROFILES = contract.USER_PROFILE
REDIS_KEY = contract.REDIS_PROFILE_KEY


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
        "updated_at": now.replace(microsecond=now.microsecond // 1000 * 1000),  # as MongoDB keeps it: Redis's copy agrees
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


def _profile_bytes(item: tuple[dict, str]) -> int:
    return mongodb.document_bytes(item[0])


def quarantine_id(user_id: str) -> str:
    """The profile step quarantines users: `session_id` = "user:<user_id>" in `pipeline_quarantine`."""
    return f"user:{user_id}"


def _same(old: dict | None, new: dict) -> bool:
    """The same profile but for when it was computed."""
    return old is not None and {**old, "updated_at": None} == {**new, "updated_at": None}


@dataclass
class ProfileRun:
    """What one run of the profile step (or a check of its stores) did."""

    window: Window
    users: int = 0  # profiles published (or, in a check, compared)
    quarantined: Quarantined = field(default_factory=lambda: Quarantined("profile"))
    drift: dict[str, Drift] = field(default_factory=dict)  # a full run's or a check's, per store
    redis_refused: str | None = None  # Redis out of memory (fence.RedisFull): MongoDB was published
    limits: batching.RequestBytes = batching.DEFAULT_LIMITS  # the largest request to each store

    def summary(self) -> dict:
        out: dict = {"window": str(self.window), "users": self.users}
        if self.redis_refused:
            out["redis_refused"] = self.redis_refused
        if self.quarantined:
            out["quarantined"] = self.quarantined.counts()
        if self.drift:
            out["drift"] = {k: d.as_dict() for k, d in self.drift.items()}
        return out


REDIS_STORE = "redis_profiles"  # the Redis copy's name in `verify` and the store-agreement table
PAGE = mongodb.TRANSACTION_DOCS  # users per page of a full run: one transaction, one Redis batch


def run_profile(
    db: Database,
    redis_client: Any,
    window: Window,
    now: datetime | None = None,
    fence: Fence = NO_FENCE,
    full: bool = False,
    limits: batching.RequestBytes = batching.DEFAULT_LIMITS,
) -> dict:
    """`fence`: the run's lease token (sentencify.steps.fence): MongoDB and Redis writes go through it.
    `full`: every user's profile compared with what the raw records imply and repaired, in MongoDB
    and in Redis, streamed in pages (`reconcile`), not only the window's users. `limits`: the
    largest request to each store (stores.batching)."""
    now = now or datetime.now(UTC)
    if full:
        return reconcile(db, redis_client, now, repair=True, fence=fence, window=window, limits=limits).summary()
    run = ProfileRun(window, limits=limits)
    users = sorted(touched_users(db, window))
    for part in chunks(users, mongodb.TRANSACTION_DOCS):
        built = _build(db, part, now, run.quarantined)
        stored = _store_mongo(db, built, run, fence)
        _to_redis(redis_client, {REDIS_KEY.format(user_id=p["user_id"]): value for p, value in stored}, run, fence)
        run.users += len(stored)
    settle(db, run.quarantined, (quarantine_id(u) for u in users), now, fence)
    log.info("profiles done", extra={"fields": run.summary()})
    return run.summary()


def _build(db: Database, users: list[str], now: datetime, quarantined: Quarantined) -> list[tuple[dict, str]]:
    """(profile, its Redis value) of each user; a user whose profile cannot be computed is quarantined."""
    built: list[tuple[dict, str]] = []
    for user_id, rec in gather(db, users).items():
        try:
            profile = build_profile(user_id, rec, now)
            built.append((profile, redis_value(profile)))
        except (ValueError, TypeError, ArithmeticError, KeyError) as exc:  # pure: about this user's records
            quarantined.add(quarantine_id(user_id), "profile_not_computable", exc)
    erased = suppressed_users(db, (p["user_id"] for p, _ in built))  # erased while this run read them
    return [(p, v) for p, v in built if p["user_id"] not in erased]


def _store_mongo(db: Database, built: list[tuple[dict, str]], run: ProfileRun, fence: Fence) -> list[tuple[dict, str]]:
    """Upsert these profiles in transactions bounded in documents and bytes (`run.limits`); a
    profile MongoDB refuses is found by bisection and its user quarantined. Returns the ones
    stored. Redis comes after MongoDB: a failure there fails the run (not recorded, progress not
    moved), and the retry rewrites both."""

    def write(items: list[tuple[dict, str]]) -> None:
        publish(db, {PROFILES: [ReplaceOne({"_id": p["_id"]}, p, upsert=True) for p, _ in items]}, fence)

    room = run.limits.mongo - mongodb.COMMAND_OVERHEAD_BYTES
    for batch in batching.batches(built, mongodb.TRANSACTION_DOCS, room, _profile_bytes):
        for (profile, _), error in bisect(batch, write, mongodb.is_data_error):
            run.quarantined.add(quarantine_id(profile["user_id"]), "profile_not_storable", error)
    return [(p, v) for p, v in built if quarantine_id(p["user_id"]) not in run.quarantined]


def reconcile(
    db: Database,
    redis_client: Any,
    now: datetime | None = None,
    *,
    repair: bool,
    fence: Fence = NO_FENCE,
    window: Window | None = None,
    limits: batching.RequestBytes = batching.DEFAULT_LIMITS,
) -> ProfileRun:
    """Every profile, in MongoDB and in Redis, compared with what the raw records imply, a page of
    users at a time (pipeline.md, "Derived stores agree with MongoDB"); with `repair` the
    differences are written, else only counted (`sentencify verify`).

    Passes: every user any A, B or C names (computed, compared with `user_profile` ignoring
    `updated_at`, and with the Redis copy of what MongoDB then holds); the profiles whose user has
    no record left (extra: removed from both stores); the Redis keys with no profile in MongoDB
    (extra). Raises what a store raises."""
    now = now or datetime.now(UTC)
    run = ProfileRun(window or Window(now, now + timedelta(microseconds=1)), limits=limits)
    mongo_drift, redis_drift = (
        run.drift.setdefault(PROFILES, Drift(PROFILES)),
        run.drift.setdefault(REDIS_STORE, Drift(REDIS_STORE)),
    )
    for users in pages(join.session_ids(db, (A, B, C), "user_id"), PAGE):
        users.sort()
        built = _build(db, users, now, run.quarantined)
        existing = {d["_id"]: d for d in find_in(db[PROFILES], "_id", users)}
        changed = [(p, v) for p, v in built if not _same(existing.get(p["_id"]), p)]
        mongo_drift.add("missing", [p["_id"] for p, _ in changed if p["_id"] not in existing])
        mongo_drift.add("different", [p["_id"] for p, _ in changed if p["_id"] in existing])
        if repair:
            changed = _store_mongo(db, changed, run, fence)
        held = {p["_id"]: v for p, v in changed}  # what MongoDB holds after this page
        for p, _ in built:
            if p["_id"] not in held and p["_id"] in existing and quarantine_id(p["_id"]) not in run.quarantined:
                held[p["_id"]] = redis_value(existing[p["_id"]])
        _sync_redis(redis_client, held, redis_drift, repair, fence, run)
        run.users += len(held)
    _remove_absent(db, redis_client, run, repair, fence)
    if repair:
        settle(db, run.quarantined, None, now, fence)
    log.info("profiles full run done" if repair else "profiles checked", extra={"fields": run.summary()})
    return run


def _to_redis(redis_client: Any, values: dict[str, str], run: ProfileRun, fence: Fence) -> None:
    """Write these profiles to Redis; a Redis out of memory (`RedisFull`) is kept in `run` and the
    rest of the run publishes MongoDB only: the run then fails with that error once recorded, and
    the next run finds Redis not as the step left it (its marker) and rewrites it whole."""
    if run.redis_refused or not values:
        return
    try:
        fence.redis_set(redis_client, values, max_bytes=run.limits.redis)
    except RedisFull as exc:
        run.redis_refused = str(exc)
        log.error("Redis refused the profiles", extra={"fields": {"error": str(exc)}})


def _sync_redis(redis_client: Any, held: dict[str, str], drift: Drift, repair: bool, fence: Fence, run: ProfileRun) -> None:
    """Redis's copy of these users' profiles compared with MongoDB's (`held`: user -> value); the
    differing ones rewritten with `repair`."""
    users = sorted(held)
    keys = [REDIS_KEY.format(user_id=u) for u in users]
    actual = redis_client.mget(keys) if keys else []
    stale: dict[str, str] = {}
    for user, key, value in zip(users, keys, actual, strict=True):
        if value is None:
            drift.add("missing", [user])
        elif json.loads(value) != json.loads(held[user]):
            drift.add("different", [user])
        else:
            continue
        stale[key] = held[user]
    if repair and stale:
        _to_redis(redis_client, stale, run, fence)


def _remove_absent(db: Database, redis_client: Any, run: ProfileRun, repair: bool, fence: Fence) -> None:
    """Profiles of users with no A, B or C left, and Redis profile keys with no profile in MongoDB."""
    mongo_drift, redis_drift = run.drift[PROFILES], run.drift[REDIS_STORE]
    for page in pages(db[PROFILES].find({}, {"_id": 1}, batch_size=PAGE), PAGE):
        ids = [d["_id"] for d in page]
        alive = join.having(db, (A, B, C), "user_id", ids)
        gone = [u for u in ids if u not in alive and quarantine_id(u) not in run.quarantined]
        mongo_drift.add("extra", gone)
        if repair and gone:
            publish(db, {PROFILES: [DeleteMany({"_id": {"$in": gone}})]}, fence)
            fence.redis_delete(redis_client, [REDIS_KEY.format(user_id=u) for u in gone])
    prefix = REDIS_KEY.format(user_id="")
    for keys in pages(redis_client.scan_iter(match=_glob_escape(prefix) + "*", count=1000), PAGE):
        users = {k.decode()[len(prefix) :]: k for k in keys}
        known = {d["_id"] for d in find_in(db[PROFILES], "_id", users, {"_id": 1})}
        extra = sorted(u for u in users if u not in known)
        redis_drift.add("extra", extra)
        if repair and extra:
            fence.redis_delete(redis_client, [users[u] for u in extra])


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)

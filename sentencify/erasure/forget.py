"""`sentencify forget`: erase users from every store, then keep them erased (pipeline.md, "Personal
data: erasure and suppression").

One erasure, per user, in an order that makes it resumable (killed at any point, the next call
finds what is left from the records that are left):
1. the request (`erasure_requests`, `_id` = the user's hash: status, requested/started/finished
   times, documents removed per store, the ingestion hours that lost records) and the user's hash
   in the suppression list: from here on the consumer stores none of the user's records;
2. every step's lease, taken by force (sentencify.erasure.fencing): a run in flight publishes nothing more;
3. what is derived from the user's sessions, found through the raw records still there: examples,
   rejects, quarantine entries, the profile in MongoDB and Redis, Qdrant points (by payload user_id
   and by the sessions' point ids), PostgreSQL rows (examples, sessions, the user, quarantine);
4. dead letters whose key or bytes name the user (by token, or by an erased user field or key);
5. F of a doc_id that only the user's records name (the doc_id suppressed too: F names no user);
6. D (by `user`, or by a correction_history_id the user's C point at) and E (by `user_id`, or by a
   context_hash the user's A point at): their keys are suppressed too, for records that arrive
   later without a user field;
7. the user's B, C, I, then A (last: the other stages find their keys through it);
8. the dashboard's hour-keyed facts recomputed for every ingestion hour that lost a record (the
   views step's own `hour_facts`), so its numbers equal what remains; then the request is done.
Every stage deletes by key, through indexes (sentencify.mongo.INDEX_PLAN), in `$in` lists of
sentencify.mongo.IN_BATCH keys (longer lists cost the local server quadratically: 5,000 keys took
13 s in lists of 50 and 116 s in lists of 1,000). Read whole: dead letters (an id inside raw bytes
has no index), once per call for all its users, and the ids of the small `etl_rejects` and
`pipeline_quarantine`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pymongo.database import Database

from sentencify import contract
from sentencify.erasure import keys, suppression
from sentencify.erasure.fencing import ForcedLease, take_all
from sentencify.erasure.report import REQUESTS
from sentencify.mongo import IN_BATCH
from sentencify.settings import Settings
from sentencify.steps.fence import FencedPostgres, FencedQdrant
from sentencify.steps.quarantine import QUARANTINE
from sentencify.steps.touched import A, B, C, D, E, F, I
from sentencify.window import Window, floor_hour

if TYPE_CHECKING:
    from sentencify.steps.runner import Stores

log = logging.getLogger("sentencify.forget")

DEAD_LETTERS, EXAMPLES, REJECTS, PROFILES = (
    contract.DEAD_LETTERS,
    contract.TRAINING_EXAMPLES,
    contract.ETL_REJECTS,
    contract.USER_PROFILE,
)
REDIS_PROFILE = contract.REDIS_PROFILE_KEY
STEPS = ("etl", "profile", "vectors", "views")
PG_SESSION_TABLES = (("fact_examples", "example_id"), ("fact_sessions", "session_id"), ("quarantine", "session_id"))

Progress = Callable[[str, str, int], None]  # (user hash prefix, store, documents removed)


@dataclass
class Footprint:
    """What ties the user's records together, found from the raw records still stored."""

    sessions: set[str] = field(default_factory=set)
    context_hashes: set[str] = field(default_factory=set)
    corrections: set[str] = field(default_factory=set)
    doc_ids: set[str] = field(default_factory=set)


@dataclass
class Erased:
    """One user's erasure as recorded: `user_hash` (HMAC, hex), status `done`, removed per store."""

    user_hash: str
    removed: dict[str, int]
    seconds: float
    hours: int


@dataclass
class Clients:
    """Where the derived stores are: factories as in sentencify.steps.runner.Stores, and the Qdrant collection."""

    redis: Callable[[], Any]
    qdrant: Callable[[], Any]
    analytics: Callable[[], Any]
    qdrant_collection: str


def footprint(db: Database, user_id: str) -> Footprint:
    """The user's sessions, context hashes, correction ids and doc ids (by the user_id / user indexes)."""
    fp = Footprint()
    fields = {"recommend_session_id": 1, "context_hash": 1, "correction_history_id": 1, "doc_id": 1}
    for coll in (A, B, C, I):
        for d in db[coll].find({"user_id": user_id}, fields):
            _add(fp.sessions, d.get("recommend_session_id"))
            _add(fp.doc_ids, d.get("doc_id"))
            if coll == A:
                _add(fp.context_hashes, d.get("context_hash"))
            if coll == C:
                _add(fp.corrections, d.get("correction_history_id"))
    for d in db[E].find({"user_id": user_id}, {"doc_id": 1}):
        _add(fp.context_hashes, d["_id"])
        _add(fp.doc_ids, d.get("doc_id"))
    for d in db[D].find({"user": user_id}, {"_id": 1}):
        _add(fp.corrections, d["_id"])
    return fp


def _add(into: set[str], value: Any) -> None:
    if isinstance(value, str):
        into.add(value)


def needles(user_id: str) -> list[re.Pattern[bytes]]:
    """How an id appears inside a dead letter's key or bytes: as a whole token (not inside a longer
    id: erasing `u1` must leave `u10`'s letters), raw UTF-8 or JSON-escaped."""
    forms = {user_id.encode("utf-8", "surrogatepass"), json.dumps(user_id)[1:-1].encode("ascii")}
    return [re.compile(rb"(?<![\w.-])" + re.escape(f) + rb"(?![\w.-])") for f in forms]


def letter_matches(letter: dict, patterns: list[re.Pattern[bytes]], erased: set[tuple[str, str]]) -> bool:
    """A dead letter of the user: its key or bytes name the id, or its record's user field or D/E key is erased."""
    for blob in (letter.get("key"), letter.get("raw")):
        if blob and any(p.search(bytes(blob)) for p in patterns):
            return True
    collection = letter.get("topic", "").rsplit(".", 1)[-1] if letter.get("topic") else None
    return any(i in erased for i in suppression.raw_identities(collection, letter.get("raw")))


class Forget:
    """The erasure of a list of users (one call of `sentencify forget` or one DAG run)."""

    def __init__(
        self, db: Database, key: bytes, clients: Clients, *, lease_ttl_s: float = 60.0, progress: Progress | None = None
    ):
        self.db, self.key, self.clients = db, key, clients
        self.lease_ttl_s = lease_ttl_s
        self.progress = progress or (lambda who, store, n: None)
        self.leases: dict[str, ForcedLease] = {}

    # -- the whole call --------------------------------------------------------------------------

    def run(self, user_ids: Iterable[str]) -> list[Erased]:
        users = list(dict.fromkeys(u for u in user_ids))
        if not users or any(not isinstance(u, str) or not u for u in users):
            raise ValueError("forget needs at least one user id, and no empty one")
        hashes = {u: keys.user_hash(self.key, u) for u in users}
        now = datetime.now(UTC)
        for h in hashes.values():  # recorded and suppressed first: the consumer stops storing the user now
            self.db[REQUESTS].update_one(
                {"_id": h},
                {
                    "$setOnInsert": {"user_hash": h, "requested_at": now},
                    "$set": {"status": "running", "started_at": now, "finished_at": None},
                    "$inc": {"attempts": 1},
                },
                upsert=True,
            )
            suppression.add(self.db, [(h, keys.USER)], h)
        out: list[Erased] = []
        with ExitStack() as stack:
            self.leases = take_all(stack, self.db, STEPS, ttl_s=self.lease_ttl_s)
            redis_client, qdrant, pg = self._open(stack)
            self._dead_letters(users, hashes)
            out.extend(self._erase(u, hashes[u], redis_client, qdrant, pg) for u in users)
        return out

    def _open(self, stack: ExitStack):
        """Redis and PostgreSQL with every step's token raised to the erasure's; Qdrant fenced by the vectors lease."""
        r = self.clients.redis()
        stack.callback(r.close)
        conn = self.clients.analytics()
        stack.callback(conn.close)
        for lease in self.leases.values():
            assert lease.fence is not None
            lease.fence.claim_redis(r)
            lease.fence.claim_postgres(conn)
        qc = self.clients.qdrant()
        stack.callback(qc.close)
        views, vectors = self.leases["views"].fence, self.leases["vectors"].fence
        assert views is not None and vectors is not None
        pg = FencedPostgres(conn, views)
        from sentencify.steps.views import apply_sql, transaction

        with transaction(pg):
            apply_sql(pg)
        return r, FencedQdrant(qc, vectors), pg

    def _check(self) -> None:
        """Every lease still ours (LeaseLost otherwise: the retry resumes)."""
        for lease in self.leases.values():
            lease.check()

    def _count(self, h: str, store: str, n: int) -> None:
        if n:
            self.db[REQUESTS].update_one({"_id": h}, {"$inc": {f"removed.{store}": n}})
        self.progress(h[:12], store, n)

    def _hours(self, h: str, collection: str, query: dict) -> None:
        """The ingestion hours of the records about to be deleted, kept in the request (a resumed
        erasure recomputes them though the records are gone)."""
        hours = {
            floor_hour(d["ingested_at"])
            for d in self.db[collection].find(query, {"ingested_at": 1})
            if isinstance(d.get("ingested_at"), datetime)
        }
        if hours:
            self.db[REQUESTS].update_one({"_id": h}, {"$addToSet": {"hours": {"$each": sorted(hours)}}})

    def _delete(self, h: str, collection: str, query: dict, *, hours: bool = True) -> None:
        self._check()
        if hours:
            self._hours(h, collection, query)
        self._count(h, collection, self.db[collection].delete_many(query).deleted_count)

    def _delete_ids(self, h: str, collection: str, ids: Iterable[str], *, hours: bool = True) -> None:
        ordered = sorted(set(ids))
        removed = 0
        for i in range(0, len(ordered), IN_BATCH):
            part = {"_id": {"$in": ordered[i : i + IN_BATCH]}}
            self._check()
            if hours:
                self._hours(h, collection, part)
            removed += self.db[collection].delete_many(part).deleted_count
        self._count(h, collection, removed)

    # -- one user --------------------------------------------------------------------------------

    def _erase(self, u: str, h: str, r, qdrant, pg) -> Erased:
        began = time.monotonic()
        fp = footprint(self.db, u)
        sessions = sorted(fp.sessions)
        # 3. derived
        self._delete_ids(h, EXAMPLES, sessions, hours=False)
        # Rejects and quarantine entries are few (sessions the chain could not use): read their ids
        # once rather than send thousands of keys that are not there.
        self._delete_ids(h, REJECTS, self._present(REJECTS, set(sessions)), hours=False)
        quarantined = {f"{step}:{s}" for step in STEPS for s in [*sessions, f"user:{u}"]}
        self._delete_ids(h, QUARANTINE, self._present(QUARANTINE, quarantined), hours=False)
        self._delete(h, PROFILES, {"_id": u}, hours=False)
        self._check()
        self._count(h, "redis", int(r.delete(REDIS_PROFILE.format(user_id=u))))
        self._count(h, "qdrant", self._qdrant(qdrant, u, sessions))
        self._postgres_rows(h, pg, u, sessions)
        # 5. F of documents only this user's records name
        only_theirs = [d for d in sorted(fp.doc_ids) if not self._named_by_others(d, u, fp)]
        suppression.add(self.db, [(keys.digest(self.key, d, keys.DOC), keys.DOC) for d in only_theirs], h)
        for i in range(0, len(only_theirs), IN_BATCH):
            self._delete(h, F, {"doc_id": {"$in": only_theirs[i : i + IN_BATCH]}}, hours=False)
        # 6. D and E, their keys suppressed first
        erased_keys = [(keys.digest(self.key, c, keys.CORRECTION), keys.CORRECTION) for c in fp.corrections]
        erased_keys += [(keys.digest(self.key, c, keys.CONTEXT_HASH), keys.CONTEXT_HASH) for c in fp.context_hashes]
        suppression.add(self.db, erased_keys, h)
        self._delete(h, D, {"user": u})
        self._delete_ids(h, D, fp.corrections)
        self._delete(h, E, {"user_id": u})
        self._delete_ids(h, E, fp.context_hashes)
        # 7. the user's own records, A last
        for coll in (B, C, I, A):
            self._delete(h, coll, {"user_id": u})
        # 8. the dashboard's hour facts, for the hours that lost records
        request = self.db[REQUESTS].find_one({"_id": h}) or {}
        hours = sorted({x if x.tzinfo else x.replace(tzinfo=UTC) for x in request.get("hours") or []})
        self._recompute_hours(pg, hours)
        finished = datetime.now(UTC)
        self.db[REQUESTS].update_one({"_id": h}, {"$set": {"status": "done", "finished_at": finished}})
        done = self.db[REQUESTS].find_one({"_id": h}) or {}
        log.info("user erased", extra={"fields": {"user_hash": h[:12], "removed": done.get("removed") or {}}})
        return Erased(h, dict(done.get("removed") or {}), time.monotonic() - began, len(hours))

    def _present(self, collection: str, ids: set[str]) -> list[str]:
        """Which of `ids` a small collection holds (one pass over its ids)."""
        return [d["_id"] for d in self.db[collection].find({}, {"_id": 1}) if d["_id"] in ids]

    def _named_by_others(self, doc_id: str, u: str, fp: Footprint) -> bool:
        """Another user's (or an anonymous) A or E names the document (the doc_id indexes); an E
        without a user that the user's A points at is the user's. B, C and I carry doc_id only
        optionally and belong to a session whose A names it."""
        if self.db[A].find_one({"doc_id": doc_id, "user_id": {"$ne": u}}, {"_id": 1}) is not None:
            return True
        # Lazily: stops at the first E that is not the user's.
        return any(
            d["_id"] not in fp.context_hashes for d in self.db[E].find({"doc_id": doc_id, "user_id": {"$ne": u}}, {"_id": 1})
        )

    def _qdrant(self, qc, u: str, sessions: list[str]) -> int:
        from qdrant_client import models

        from sentencify.vectorstore import point_id

        name = self.clients.qdrant_collection
        if not qc.collection_exists(name):
            return 0
        removed = 0
        by_user = models.FieldCondition(key="user_id", match=models.MatchValue(value=u))
        parts = [sessions[i : i + 1000] for i in range(0, len(sessions), 1000)] or [[]]
        for n, part in enumerate(parts):
            conditions: list[Any] = [by_user] if n == 0 else []
            if part:
                conditions.append(models.HasIdCondition(has_id=[point_id(s) for s in part]))
            if not conditions:
                continue
            selector = models.Filter(should=conditions)
            removed += qc.count(name, count_filter=selector, exact=True).count
            qc.delete(name, points_selector=models.FilterSelector(filter=selector), wait=True)
        return removed

    def _postgres_rows(self, h: str, pg, u: str, sessions: list[str]) -> None:
        from sentencify.steps.views import transaction
        from sentencify.stores import postgres

        stored = sorted({postgres.text(s) for s in sessions})
        users = [postgres.text(u), postgres.text(f"user:{u}")]
        for table, column in PG_SESSION_TABLES:
            removed = 0
            for i in range(0, max(len(stored), 1), 5000):
                ids = stored[i : i + 5000] + (users[1:] if table == "quarantine" and i == 0 else [])
                if not ids:
                    continue
                with transaction(pg), pg.cursor() as cur:
                    cur.execute(f"delete from sentencify.{table} where {column} = any(%s)", (ids,))
                    removed += cur.rowcount
            self._count(h, f"postgres:{table}", removed)
        with transaction(pg), pg.cursor() as cur:
            cur.execute("delete from sentencify.fact_users where user_id = %s", (users[0],))
            self._count(h, "postgres:fact_users", cur.rowcount)

    def _recompute_hours(self, pg, hours: list[datetime]) -> None:
        """The views' hour-keyed facts of these ingestion hours, recomputed from what MongoDB holds
        now (sentencify.steps.views: `hour_facts`, `_replace_hours`): consecutive hours together,
        a day at most per transaction."""
        from sentencify.steps.views import HOURS_PER_TRANSACTION, _replace_hours, hour_facts, transaction

        for window in runs_of_hours(hours, HOURS_PER_TRANSACTION):
            self._check()
            facts = hour_facts(self.db, window)
            with transaction(pg), pg.cursor() as cur:
                _replace_hours(cur, window, facts)

    def _dead_letters(self, users: list[str], hashes: dict[str, str]) -> None:
        """One pass over the dead letters for every user of the call (raw bytes have no index)."""
        patterns = {u: needles(u) for u in users}
        erased = {(keys.USER, u) for u in users}
        fps = {u: footprint(self.db, u) for u in users}
        for fp in fps.values():
            erased |= {(keys.CONTEXT_HASH, c) for c in fp.context_hashes} | {(keys.CORRECTION, c) for c in fp.corrections}
        hits: dict[str, list] = {u: [] for u in users}
        for letter in self.db[DEAD_LETTERS].find({}, {"key": 1, "raw": 1, "topic": 1}, batch_size=1000):
            for u in users:
                mine = {i for i in erased if i[0] != keys.USER or i[1] == u}
                if letter_matches(letter, patterns[u], mine):
                    hits[u].append(letter["_id"])
                    break
        for u, ids in hits.items():
            self._delete_ids(hashes[u], DEAD_LETTERS, ids)


def runs_of_hours(hours: list[datetime], most: int) -> list[Window]:
    """Sorted hour starts grouped into windows of consecutive hours, `most` hours at most each."""
    out: list[Window] = []
    for h in sorted(set(hours)):
        last = out[-1] if out else None
        if last is not None and last.end == h and (last.end - last.start) < timedelta(hours=most):
            out[-1] = Window(last.start, h + timedelta(hours=1))
        else:
            out.append(Window(h, h + timedelta(hours=1)))
    return out


def requests(db: Database) -> list[dict]:
    """Every erasure request (no personal data: hashes, times, counts), for the views' export."""
    return list(db[REQUESTS].find({}, {"hours": 0}).sort("requested_at", 1))


def forget_users(
    settings: Settings,
    user_ids: Iterable[str],
    *,
    db: Database | None = None,
    stores: Stores | None = None,
    progress: Progress | None = None,
) -> list[Erased]:
    """Erase `user_ids` (pipeline.md "Personal data"), from settings, or with the caller's MongoDB
    database and store factories (the Airflow operator's hooks). Returns one `Erased` per user.
    Raises ErasureKeyMissing (no ERASURE_KEY), ValueError (no user id), LeaseLost (the erasure lost
    a lease it held: nothing more was written, a retry resumes), and whatever a store raises; a
    retry, or the next call, completes a half-done erasure."""
    from sentencify import mongo
    from sentencify.steps.runner import Stores as _Stores

    key = keys.erasure_key(settings)
    stores = stores or _Stores.from_settings(settings)
    client = mongo.client(settings.mongo_uri, app_name="sentencify-forget") if db is None else None
    if client is not None:
        db = client[settings.mongo_db]
    assert db is not None
    try:
        mongo.ensure_indexes(db)  # the indexes the erasure reads by (a no-op once they exist)
        clients = Clients(stores.redis, stores.qdrant, stores.analytics, settings.qdrant_collection)
        return Forget(db, key, clients, lease_ttl_s=settings.lease_ttl_s, progress=progress).run(user_ids)
    finally:
        if client is not None:
            client.close()

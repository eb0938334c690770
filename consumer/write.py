"""Write: one micro-batch -> one `insert_many(ordered=False)`, then duplicates resolved (no-op, conflict, re-stamp)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pymongo
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from sentencify import mongo
from sentencify.erasure import suppression
from sentencify.erasure.keys import ErasureKeyMissing
from sentencify.erasure.suppression import SuppressionList
from sentencify.errors import ServiceError

DUPLICATE_KEYS = frozenset({11000, 11001})
# Per-document errors that are the document's own fault: retrying can never store it, so it is
# dead-lettered. Every other error (unknown codes included) is treated as transient and retried:
# dead-lettering a valid record because of a server state (Interrupted, LockTimeout, ...) loses it.
PERMANENT_CODES = frozenset(
    {
        2,  # BadValue
        9,  # FailedToParse
        14,  # TypeMismatch
        15,  # Overflow (e.g. nesting too deep)
        22,  # InvalidBSON
        52,  # DollarPrefixedFieldName
        53,  # InvalidIdField
        55,  # InvalidDBRef
        56,  # EmptyFieldName
        57,  # DottedFieldName
        121,  # DocumentValidationFailure (a collection validator refuses it)
        10334,  # BSONObjectTooLarge
        17280,  # KeyTooLong (an indexed value over the old 1 KB index key limit)
        16755,  # cannot extract geo keys
    }
)
_ENCODING_ERRORS = (bson.errors.InvalidDocument, OverflowError, ValueError)  # DocumentTooLarge is an InvalidDocument


class TransientWriteError(ServiceError):
    """MongoDB could not take the batch now (down, slow, failing over); the same batch is retried."""

    named = True


# What the consumer adds to a log document: not part of its content when two records are compared.
OWN_FIELDS = frozenset({"ingested_at", "_kafka"})


@dataclass
class WriteOutcome:
    inserted: int = 0  # stored by this write (a displaced later record's place taken included)
    duplicates: int = 0  # the same content was already stored: a no-op
    rejected: dict[int, str] = field(default_factory=dict)  # batch index -> why it can never be stored
    conflicts: dict[int, str] = field(default_factory=dict)  # batch index -> which stored record keeps the key
    restamped: int = 0  # duplicates whose stored `ingested_at` was older than the bound: stamped anew
    seconds: float = 0.0  # how long MongoDB took
    suppressed: set[int] = field(default_factory=set)  # batch indexes of erased users' records: neither stored nor dead-lettered


class MongoWriter:
    """Delivery: at-least-once and idempotent: a document whose `_id` is already stored with the same content
    counts as written; with other content it is a conflict (events.md): the record earliest in its partition
    keeps the key, the other is reported in `conflicts`; a document MongoDB refuses for its own content is
    reported in `rejected`; the rest of the batch is stored.

    Every operation runs under a client-side operation timeout (`pymongo.timeout`, driver retries included,
    `maxTimeMS` sent), so an acknowledged write was visible at most `timeout_s` after its `ingested_at`.
    A write the server applies after the client gave up is never committed in Kafka: its record is written
    again (the retry, or the partition's next owner), meets the stored document as a duplicate and, when
    that document's stamp is older than `timeout_s`, stamps it anew with the server's time. So every log
    document is visible within `sentencify.mongo.VISIBILITY_BOUND_S` of its final `ingested_at`.

    The displaced record of a conflict (a later offset of the same partition stored first, e.g. by another
    consumer before a rebalance) is replaced conditionally; its own offset is not yet committed (offsets
    commit contiguously and the earlier record was not), so it is read again and dead-lettered as a conflict
    before anything commits past it.
    """

    def __init__(self, db: Database, timeout_s: float | None = None, suppression: SuppressionList | None = None) -> None:
        self.db = db
        self.timeout_s = mongo.WRITE_TIMEOUT_S if timeout_s is None else timeout_s
        self.suppression = suppression  # erased users (pipeline.md "Personal data"): checked before every write

    def write(
        self, collection: str, docs: list[dict[str, Any]], *, logs: bool = True, record_ms: list[int | None] | None = None
    ) -> WriteOutcome:
        """`logs=False` (dead letters): a duplicate is always a no-op, never compared. `record_ms`: each
        document's Kafka record timestamp (epoch ms), when known."""
        began = time.perf_counter()
        record_ms = record_ms or [None] * len(docs)
        suppressed = self._suppressed(collection, docs, logs)
        if suppressed:
            keep = [i for i in range(len(docs)) if i not in suppressed]
            outcome = (
                self._write(collection, [docs[i] for i in keep], logs, [record_ms[i] for i in keep]) if keep else WriteOutcome()
            )
            outcome.rejected = {keep[i]: why for i, why in outcome.rejected.items()}
            outcome.conflicts = {keep[i]: why for i, why in outcome.conflicts.items()}
            outcome.suppressed = suppressed
        else:
            outcome = self._write(collection, docs, logs, record_ms)
        outcome.seconds = time.perf_counter() - began
        return outcome

    def _suppressed(self, collection: str, docs: list[dict[str, Any]], logs: bool) -> set[int]:
        """Batch indexes of records of erased users (one query for the batch); a dead letter is
        judged by the record in its bytes. Raises TransientWriteError when the list cannot be read."""
        if self.suppression is None:
            return set()
        if logs:
            found = [suppression.identities(collection, d) for d in docs]
        else:
            found = [suppression.raw_identities(_collection_of(d.get("topic")), d.get("raw"), d.get("key")) for d in docs]
        try:
            with pymongo.timeout(self.timeout_s):
                return self.suppression.suppressed(found)
        except (PyMongoError, ErasureKeyMissing) as exc:
            raise TransientWriteError(f"checking erased users: {type(exc).__name__}: {exc}") from exc

    def _write(self, collection: str, docs: list[dict[str, Any]], logs: bool, record_ms: list[int | None]) -> WriteOutcome:
        try:
            with pymongo.timeout(self.timeout_s):
                result = self.db[collection].insert_many(docs, ordered=False)
            return WriteOutcome(inserted=len(result.inserted_ids))
        except BulkWriteError as exc:
            outcome, duplicate = self._classify(exc)
            if duplicate and logs:
                self._resolve(collection, docs, record_ms, duplicate, outcome)
            else:
                outcome.duplicates += len(duplicate)
            return outcome
        except _ENCODING_ERRORS:  # the driver refused to encode one of them: find it, store the rest
            return self._isolate(collection, docs, logs, record_ms)
        except PyMongoError as exc:
            raise TransientWriteError(f"{type(exc).__name__}: {exc}") from exc

    def _resolve(
        self,
        collection: str,
        docs: list[dict[str, Any]],
        record_ms: list[int | None],
        duplicate: list[int],
        outcome: WriteOutcome,
    ) -> None:
        """Each duplicate key: the same content (a no-op, re-stamped if its stamp is stale), or a conflict."""
        coll = self.db[collection]
        try:
            with pymongo.timeout(self.timeout_s):
                stored = {d["_id"]: d for d in mongo.find_in(coll, "_id", [docs[i]["_id"] for i in duplicate])}
            stale_before = datetime.now(UTC) - timedelta(seconds=self.timeout_s)
            restamp = []
            for index in duplicate:
                doc, old = docs[index], stored.get(docs[index]["_id"])
                if old is None:  # removed since the insert: write the batch again
                    raise TransientWriteError(f"{doc['_id']!r} was removed while being written")
                if same_content(doc, old):
                    outcome.duplicates += 1
                    if not isinstance(old.get("ingested_at"), datetime) or _utc(old["ingested_at"]) < stale_before:
                        restamp.append(old["_id"])
                elif displaces(doc, old, record_ms[index]):
                    with pymongo.timeout(self.timeout_s):
                        # Conditional on the stored record still being the later one (another writer may race).
                        done = coll.replace_one({"_id": doc["_id"], "_kafka": old["_kafka"]}, doc)
                    if not done.matched_count:
                        raise TransientWriteError(f"{doc['_id']!r} changed while its conflict was resolved")
                    outcome.inserted += 1
                else:
                    outcome.conflicts[index] = conflict_detail(doc, old)
            if restamp:
                with pymongo.timeout(self.timeout_s):  # the server's time: a late-applied write counts as new
                    coll.update_many(
                        {
                            "_id": {"$in": restamp},
                            "$or": [{"ingested_at": {"$lt": stale_before}}, {"ingested_at": {"$exists": False}}],
                        },
                        {"$currentDate": {"ingested_at": True}},
                    )
                outcome.restamped += len(restamp)
        except PyMongoError as exc:
            raise TransientWriteError(f"resolving duplicates: {type(exc).__name__}: {exc}") from exc

    def _isolate(self, collection: str, docs: list[dict[str, Any]], logs: bool, record_ms: list[int | None]) -> WriteOutcome:
        rejected: dict[int, str] = {}
        for index, doc in enumerate(docs):
            try:
                bson.encode(doc)
            except _ENCODING_ERRORS as exc:
                rejected[index] = f"cannot be encoded as BSON: {exc}"
        if not rejected:  # not the documents after all: a driver problem, so retry
            raise TransientWriteError("the driver could not encode the batch, though each document encodes")
        keep = [i for i in range(len(docs)) if i not in rejected]
        outcome = self._write(collection, [docs[i] for i in keep], logs, [record_ms[i] for i in keep]) if keep else WriteOutcome()
        outcome.rejected = {keep[i]: why for i, why in outcome.rejected.items()} | rejected
        outcome.conflicts = {keep[i]: why for i, why in outcome.conflicts.items()}
        return outcome

    @staticmethod
    def _classify(exc: BulkWriteError) -> tuple[WriteOutcome, list[int]]:
        """(outcome so far, batch indexes whose key was already stored)."""
        details = exc.details or {}
        if details.get("writeConcernErrors"):
            raise TransientWriteError(f"write concern not satisfied: {details['writeConcernErrors'][:1]}") from exc
        outcome = WriteOutcome(inserted=details.get("nInserted", 0))
        duplicate = []
        for err in details.get("writeErrors", []):
            code = err.get("code")
            if code in DUPLICATE_KEYS:
                duplicate.append(err["index"])
            elif code in PERMANENT_CODES:
                outcome.rejected[err["index"]] = f"MongoDB rejected the document (code {code}): {err.get('errmsg')}"
            else:
                raise TransientWriteError(f"code {code}: {err.get('errmsg')}") from exc
        return outcome, duplicate


def _collection_of(topic: Any) -> str | None:
    """A log topic's collection (topic = prefix + name; names have no dot), or None."""
    name = topic.rsplit(".", 1)[-1] if isinstance(topic, str) else None
    return name if name in suppression.USER_FIELDS else None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _canon(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, datetime):
        return _utc(value)
    return value


def same_content(doc: dict[str, Any], stored: dict[str, Any]) -> bool:
    """The two log documents hold the same record, whatever the consumer added (`ingested_at`, `_kafka`)."""
    mine = {k: v for k, v in doc.items() if k not in OWN_FIELDS}
    theirs = {k: v for k, v in stored.items() if k not in OWN_FIELDS}
    return _canon(mine) == _canon(theirs)


def displaces(doc: dict[str, Any], stored: dict[str, Any], record_ms: int | None = None) -> bool:
    """`doc` is earlier in the same partition than the stored record of its key, so it keeps the key.

    Records of different partitions have no order: the one stored first keeps the key. A record
    produced after the stored one was ingested (`record_ms`, its Kafka timestamp) is later whatever
    its offset: offsets start again at 0 when a topic is re-created or moved to another cluster."""
    mine, theirs = doc.get("_kafka") or {}, stored.get("_kafka") or {}
    produced_later = (
        record_ms is not None
        and isinstance(stored.get("ingested_at"), datetime)
        and record_ms / 1000 > _utc(stored["ingested_at"]).timestamp()
    )
    if produced_later:
        return False
    return (
        mine.get("topic") == theirs.get("topic")
        and mine.get("partition") == theirs.get("partition")
        and isinstance(theirs.get("offset"), int)
        and mine["offset"] < theirs["offset"]
    )


def conflict_detail(doc: dict[str, Any], stored: dict[str, Any]) -> str:
    fields = sorted(k for k in (set(doc) | set(stored)) - OWN_FIELDS if _canon(doc.get(k, ...)) != _canon(stored.get(k, ...)))
    where = stored.get("_kafka") or {}
    return (
        f"key {doc['_id']!r} is already stored with different content ({', '.join(fields[:10])} differ) from "
        f"{where.get('topic')}[{where.get('partition')}] offset {where.get('offset')}; the record earliest in its "
        "partition keeps the key (events.md), this one is kept here (replay it once the stored one is removed)"
    )

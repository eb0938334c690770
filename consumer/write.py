"""Write: one micro-batch -> one `insert_many(ordered=False)`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import bson
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

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


class TransientWriteError(Exception):
    """MongoDB could not take the batch now (down, slow, failing over); the same batch is retried."""


@dataclass
class WriteOutcome:
    inserted: int = 0
    duplicates: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # batch index -> why it can never be stored
    seconds: float = 0.0  # how long MongoDB took


class MongoWriter:
    """Delivery: at-least-once and idempotent: a document whose `_id` is already stored counts as written;
    a document MongoDB refuses for its own content is reported in `rejected`, the rest of its batch is stored."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def write(self, collection: str, docs: list[dict[str, Any]]) -> WriteOutcome:
        began = time.perf_counter()
        outcome = self._write(collection, docs)
        outcome.seconds = time.perf_counter() - began
        return outcome

    def _write(self, collection: str, docs: list[dict[str, Any]]) -> WriteOutcome:
        try:
            result = self.db[collection].insert_many(docs, ordered=False)
            return WriteOutcome(inserted=len(result.inserted_ids))
        except BulkWriteError as exc:
            return self._classify(exc)
        except _ENCODING_ERRORS:  # the driver refused to encode one of them: find it, store the rest
            return self._isolate(collection, docs)
        except PyMongoError as exc:
            raise TransientWriteError(f"{type(exc).__name__}: {exc}") from exc

    def _isolate(self, collection: str, docs: list[dict[str, Any]]) -> WriteOutcome:
        rejected: dict[int, str] = {}
        for index, doc in enumerate(docs):
            try:
                bson.encode(doc)
            except _ENCODING_ERRORS as exc:
                rejected[index] = f"cannot be encoded as BSON: {exc}"
        if not rejected:  # not the documents after all: a driver problem, so retry
            raise TransientWriteError("the driver could not encode the batch, though each document encodes")
        keep = [i for i in range(len(docs)) if i not in rejected]
        outcome = self._write(collection, [docs[i] for i in keep]) if keep else WriteOutcome()
        outcome.rejected = {keep[i]: why for i, why in outcome.rejected.items()} | rejected
        return outcome

    @staticmethod
    def _classify(exc: BulkWriteError) -> WriteOutcome:
        details = exc.details or {}
        if details.get("writeConcernErrors"):
            raise TransientWriteError(f"write concern not satisfied: {details['writeConcernErrors'][:1]}") from exc
        outcome = WriteOutcome(inserted=details.get("nInserted", 0))
        for err in details.get("writeErrors", []):
            code = err.get("code")
            if code in DUPLICATE_KEYS:
                outcome.duplicates += 1
            elif code in PERMANENT_CODES:
                outcome.rejected[err["index"]] = f"MongoDB rejected the document (code {code}): {err.get('errmsg')}"
            else:
                raise TransientWriteError(f"code {code}: {err.get('errmsg')}") from exc
        return outcome

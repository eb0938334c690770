"""Write: one micro-batch -> one `insert_many(ordered=False)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

DUPLICATE_KEY = 11000
# Per-document error codes that a later attempt can succeed on; any other per-document error is
# the document's own fault (too large, invalid) and is dead-lettered instead of retried forever.
RETRYABLE_CODES = frozenset(
    {6, 7, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 64, 100}
)


class TransientWriteError(Exception):
    """MongoDB could not take the batch now (down, slow, failing over); the same batch is retried."""


@dataclass
class WriteOutcome:
    inserted: int = 0
    duplicates: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # batch index -> MongoDB's reason


class MongoWriter:
    """Delivery: at-least-once and idempotent: a document whose `_id` is already stored counts as written."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def write(self, collection: str, docs: list[dict[str, Any]]) -> WriteOutcome:
        try:
            result = self.db[collection].insert_many(docs, ordered=False)
            return WriteOutcome(inserted=len(result.inserted_ids))
        except BulkWriteError as exc:
            return self._classify(exc)
        except PyMongoError as exc:
            raise TransientWriteError(f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _classify(exc: BulkWriteError) -> WriteOutcome:
        details = exc.details or {}
        if details.get("writeConcernErrors"):
            raise TransientWriteError(f"write concern not satisfied: {details['writeConcernErrors'][:1]}") from exc
        outcome = WriteOutcome(inserted=details.get("nInserted", 0))
        for err in details.get("writeErrors", []):
            code = err.get("code")
            if code == DUPLICATE_KEY:
                outcome.duplicates += 1
            elif code in RETRYABLE_CODES:
                raise TransientWriteError(f"code {code}: {err.get('errmsg')}") from exc
            else:
                outcome.rejected[err["index"]] = f"MongoDB rejected the document (code {code}): {err.get('errmsg')}"
        return outcome

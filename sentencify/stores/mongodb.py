"""MongoDB (the derived collections the chain writes): transaction size, and data errors.

Rules (pipeline.md, opening; MongoDB manual "Production Considerations" for transactions):
- a transaction holds at most `TRANSACTION_DOCS` whole documents: no window, however large (a
  first run, a catch-up), needs a larger one, and each document is written whole;
- a document over 16 MB (BSONObjectTooLarge) or one the server refuses for its content is about
  that document: the session is isolated and quarantined. So is a join whose result for one
  session passes 16 MB (`is_too_large`: MongoDB refuses the whole aggregation). Connection errors, timeouts, write
  concern errors and transient transaction errors are about the store: the run fails.
"""

from __future__ import annotations

import bson
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    InvalidDocument,
    OperationFailure,
    WriteConcernError,
    WriteError,
)

TRANSACTION_DOCS = 1000
DOCUMENT_BYTES = 16 * 1024 * 1024  # BSON's maxBsonObjectSize
# A write command's message also carries its command document (the collection, the session, the
# transaction's fields): room kept under MONGO_MAX_REQUEST_BYTES for it.
COMMAND_OVERHEAD_BYTES = 16 * 1024

# Server error codes about a document's content (src/mongo/base/error_codes.yml): BadValue,
# TypeMismatch, Overflow, InvalidLength, BSONObjectTooLarge, KeyTooLong, DollarPrefixedFieldName,
# InvalidBSON, BSONObjectTooLarge (old code), document too large on update.
DATA_CODES = frozenset({2, 14, 15, 16, 10334, 17280, 52, 22, 17419, 17420})


# A query or aggregation whose result passes 16 MB (MongoDB refuses it; the local server does not):
# BSONObjectTooLarge, `$lookup`'s "Total size of documents ... exceeds maximum document size", and
# the older "BSONObj size ... is invalid" codes.
TOO_LARGE_CODES = frozenset({10334, 4568, 17419, 17420})


def is_too_large(exc: BaseException) -> bool:
    """A read the server refused because one result document (one joined session) passes 16 MB."""
    if isinstance(exc, ExecutionTimeout | ConnectionFailure):
        return False
    return isinstance(exc, InvalidDocument) or (isinstance(exc, OperationFailure) and exc.code in TOO_LARGE_CODES)


def is_data_error(exc: BaseException) -> bool:
    if isinstance(exc, InvalidDocument):  # DocumentTooLarge included: refused before it is sent
        return True
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WriteConcernError):
        return False
    if isinstance(exc, OperationFailure) and exc.has_error_label("TransientTransactionError"):
        return False
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or []
        return bool(errors) and all(e.get("code") in DATA_CODES for e in errors) and not exc.details.get("writeConcernErrors")
    if isinstance(exc, WriteError | OperationFailure):
        return exc.code in DATA_CODES
    return False


def document_bytes(doc: dict) -> int:
    """One document's bytes in a write (its BSON, plus its entry in the command's array): what
    `stores.batching` bounds a transaction's batch by (MONGO_MAX_REQUEST_BYTES, MongoDB's 48 MB
    message). A document that cannot be encoded counts as over 16 MB (its write is refused and
    the session quarantined, as the module says)."""
    try:
        return len(bson.encode(doc)) + 16
    except (bson.errors.InvalidDocument, OverflowError, TypeError, ValueError):
        return DOCUMENT_BYTES + 1

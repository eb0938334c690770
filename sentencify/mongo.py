"""MongoDB access shared by the consumer and the steps: client and the indexes later joins rely on."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, MongoClient
from pymongo.database import Database

# Each index serves a named read of the later steps; every extra index costs every insert
# (it halves the ingest rate on the local server), so a field is indexed only where it is read.
INDEX_PLAN: dict[str, list[tuple[str, ...]]] = {
    # A: touched-by-window, rebuild by session, touched-by-E (context_hash), profile by user;
    # erasure: the user's records (user_id), whether another user names a document (doc_id)
    "editor_recommend_options": [("ingested_at",), ("recommend_session_id",), ("context_hash",), ("user_id",), ("doc_id",)],
    # B, C: touched-by-window, rebuild by session, profile by user; C: touched-by-D
    "editor_run_paraphrasing": [("ingested_at",), ("recommend_session_id",), ("user_id",)],
    "editor_selected_paraphrasing": [("ingested_at",), ("recommend_session_id",), ("user_id",), ("correction_history_id",)],
    # D, E are read by `_id`; only their arrival window is scanned. Erasure: D by `user`, E by
    # `user_id` and whether another user's E names a document (doc_id)
    "correction_history": [("ingested_at",), ("user",)],
    "context_block": [("ingested_at",), ("user_id",), ("doc_id",)],
    # F: point-in-time join on (doc_id, last_updated)
    "document_context_cache": [("ingested_at",), ("doc_id", "last_updated")],
    # I: touched-by-window, latency per hour; erasure: the user's records
    "recommend_log": [("ingested_at",), ("recommend_session_id",), ("created_at",), ("user_id",)],
    "dead_letters": [("failed_at",), ("topic",), ("reason",)],
}


# Every consumer write runs under a client-side operation timeout of this long (`pymongo.timeout`:
# server selection, the driver's own retry of a retryable write, and `maxTimeMS` sent to the server
# are all inside it). The consumer stamps `ingested_at` just before the insert and retries a batch
# that timed out with a new stamp.
WRITE_TIMEOUT_S = 60
# The longest time from a log document's final `ingested_at` until it is visible (pipeline.md
# "Windows and late data"; the chain's look-back is CLOCK_SKEW_S + this):
# - an acknowledged insert was applied before its answer, and the answer came within
#   WRITE_TIMEOUT_S of the stamp (driver retries included): visible <= stamp + 60 s;
# - an insert the server applies after the client gave up (a stalled server, a request left in a
#   socket buffer) is never committed in Kafka, so its record is written again (the batch retry, or
#   the partition's next owner); that write meets it as a duplicate and, its stamp being older than
#   WRITE_TIMEOUT_S, stamps it anew with the server's time (`$currentDate`): from then on it is
#   visible with a stamp no older than the write that made it so (consumer/write.py).
# So 60 s + 0 = 60 s.
VISIBILITY_BOUND_S = WRITE_TIMEOUT_S


def client(uri: str, app_name: str = "sentencify", timeout_ms: int = 5000, socket_timeout_s: float | None = None) -> MongoClient:
    # Fail fast when MongoDB is away: callers retry with backoff instead of hanging 30 s.
    extra: dict[str, Any] = {} if socket_timeout_s is None else {"socketTimeoutMS": int(socket_timeout_s * 1000)}
    return MongoClient(
        uri,
        appname=app_name,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        tz_aware=True,
        **extra,
    )


def ensure_indexes(db: Database) -> None:
    """Idempotent: creating an existing index is a no-op."""
    for collection, keys in INDEX_PLAN.items():
        for key in keys:
            db[collection].create_index([(f, ASCENDING) for f in key], name="_".join(f"{f}_1" for f in key))


# A long `$in` list is planned badly: the local server's cost grows with the square of its length
# (5,000 ids took 15 s; the same ids in batches of 50 took 0.4 s), and MongoDB itself prefers
# bounded lists. Every lookup by many keys goes through `find_in`.
IN_BATCH = 50


def find_in(collection, field: str, values, projection=None, batch: int = IN_BATCH, extra: dict | None = None):
    """Documents whose `field` is one of `values` (deduplicated), `batch` values per query."""
    keys = sorted({v for v in values if v is not None})
    for i in range(0, len(keys), batch):
        yield from collection.find({field: {"$in": keys[i : i + batch]}, **(extra or {})}, projection)

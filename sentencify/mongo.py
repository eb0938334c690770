"""MongoDB access shared by the consumer and the steps: client and the indexes later joins rely on."""

from __future__ import annotations

from pymongo import ASCENDING, MongoClient
from pymongo.database import Database

from sentencify.schemas import EVENT_TYPES

# Fields each log collection is joined, filtered or windowed on (pipeline.md).
_INDEXED_FIELDS = (
    "recommend_session_id",
    "source_recommend_event_id",
    "context_hash",
    "correction_history_id",
    "doc_id",
    "user_id",
    "ingested_at",
)


def client(uri: str, app_name: str = "sentencify", timeout_ms: int = 5000) -> MongoClient:
    # Fail fast when MongoDB is away: callers retry with backoff instead of hanging 30 s.
    return MongoClient(
        uri,
        appname=app_name,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        tz_aware=True,
    )


def index_plan() -> dict[str, list[str]]:
    """Collection -> the fields indexed on it (only fields its model has, never the `_id` key)."""
    plan: dict[str, list[str]] = {}
    for et in EVENT_TYPES:
        fields = et.model.model_fields
        plan[et.name] = [f for f in _INDEXED_FIELDS if f == "ingested_at" or (f in fields and f != et.key_field)]
    plan["correction_history"].append("user")
    plan["document_context_cache"].append("last_updated")
    plan["dead_letters"] = ["topic", "failed_at", "reason"]
    return plan


def ensure_indexes(db: Database) -> None:
    """Idempotent: creating an existing index is a no-op."""
    for collection, fields in index_plan().items():
        for f in fields:
            db[collection].create_index([(f, ASCENDING)], name=f"{f}_1")

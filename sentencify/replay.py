"""`sentencify replay-dead-letters`: send dead-lettered records back through Kafka, after a fix.

Once a producer bug or a too-strict rule is fixed, the records it rejected can go through the
consumer again, unchanged: its original value bytes and key, whatever the reason it failed. Each
replayed dead letter is marked (`replayed_at`, `replayed_to`), never deleted: a record that fails
again becomes a new dead letter (its new offset), and a record that passes is stored once, under
its event key. Oversized records kept only a prefix and cannot be replayed; records of a topic
that is not one of the seven log topics have nowhere to go. Both are counted and left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymongo.database import Database

from consumer.dead_letter import DEAD_LETTERS


@dataclass
class Replayed:
    sent: int = 0
    truncated: int = 0
    unknown_topic: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


def selection(reason: str | None = None, topic: str | None = None) -> dict:
    query: dict = {"replayed_at": {"$exists": False}}
    if reason:
        query["reason"] = reason
    if topic:
        query["topic"] = topic
    return query


def replay_dead_letters(
    db: Database,
    kafka_producer,
    *,
    known_topics: set[str],
    reason: str | None = None,
    topic: str | None = None,
    to_topic: str | None = None,
    dry_run: bool = False,
) -> Replayed:
    """Produce each selected dead letter's raw bytes (and key) to its topic, or `to_topic`; then mark it.

    Only to `known_topics` (the seven log topics of the prefix)."""
    if to_topic is not None and to_topic not in known_topics:
        raise ValueError(f"--to-topic {to_topic!r} is not one of the log topics: {', '.join(sorted(known_topics))}")
    out = Replayed()
    dead = db[DEAD_LETTERS]
    for doc in dead.find(selection(reason, topic)).sort("_id", 1):
        if doc.get("truncated"):
            out.truncated += 1
            continue
        target = to_topic or doc["topic"]
        if target not in known_topics:
            out.unknown_topic += 1
            continue
        out.sent += 1
        out.by_topic[target] = out.by_topic.get(target, 0) + 1
        if dry_run:
            continue
        key = bytes(doc["key"]) if doc.get("key") is not None else None
        kafka_producer.send(target, key=key, value=bytes(doc["raw"])).get(timeout=30)  # acked before it is marked
        dead.update_one({"_id": doc["_id"]}, {"$set": {"replayed_at": datetime.now(UTC), "replayed_to": target}})
    return out

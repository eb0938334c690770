"""`sentencify replay-dead-letters`: send dead-lettered records back through Kafka, after a fix.

Replay sends a letter's original value bytes and key, unchanged, to its topic (events.md). So it
recovers what was refused by something that has changed since: a rule since relaxed, a conflict
whose stored record was removed, a refusal that was about MongoDB's state, not the record. It
cannot repair bytes: after a producer bug, the fixed producer must send the records again; replaying
the same bad bytes only makes them fail again.

Each letter is therefore re-checked first with today's rules (decode, route, schema, what MongoDB
can store; a conflict: is its key still stored with other content?) and the ones that would fail
again are counted by reason. `skip_failing=True` (the command's `--only-storable`) sends only the others.
Each replayed letter is marked (`replayed_at`, `replayed_to`), never deleted: a record that fails
again becomes a new dead letter, one that passes is stored once under its event key. Oversized
records kept only a prefix and cannot be replayed; records of a topic that is not one of the seven
log topics have nowhere to go. Both are counted and left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymongo.database import Database

from consumer.records import BadRecord, Position
from consumer.route import Router
from consumer.validate import Validator, to_document
from consumer.write import same_content
from sentencify.contract import DEAD_LETTERS
from sentencify.erasure.suppression import SuppressionList, raw_identities


@dataclass
class Replayed:
    sent: int = 0
    truncated: int = 0
    unknown_topic: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    fail_again: dict[str, int] = field(default_factory=dict)  # reason -> letters today's rules still refuse
    skipped: int = 0  # of those, not sent (`skip_failing`)
    suppressed: int = 0  # records of erased users: never sent again (pipeline.md "Personal data")


@dataclass
class Rules:
    """Today's ingestion rules, as the consumer applies them (the settings it runs with)."""

    prefix: str
    embedding_dim: int
    max_record_bytes: int

    def check(self, db: Database, target: str, letter: dict) -> str | None:
        """The reason the letter's record would be refused again on `target`, or None if it would be stored."""
        raw = bytes(letter["raw"])
        position = Position(target, letter.get("partition", 0), letter.get("offset", 0))
        try:
            collection, doc = to_document(
                Router(self.prefix), Validator(self.embedding_dim), self.max_record_bytes, position, raw
            )
        except BadRecord as err:
            return err.reason
        stored = db[collection].find_one({"_id": doc["_id"]})
        if stored is not None and not same_content(doc, stored):
            return "conflict"
        return None


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
    rules: Rules | None = None,
    skip_failing: bool = False,
    suppressed: SuppressionList | None = None,
) -> Replayed:
    """Produce each selected dead letter's raw bytes (and key) to its topic, or `to_topic`; then mark it.

    Only to `known_topics` (the seven log topics of the prefix). With `rules`, each letter is
    re-checked first and `fail_again` counts, by reason, those today's rules would still refuse;
    with `skip_failing` too, those are not sent (and stay unmarked). With `suppressed` (the erased
    users), a letter whose record belongs to an erased user is never sent. Raises ValueError for a
    `to_topic` that is not a log topic."""
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
        if suppressed is not None and suppressed.is_suppressed(
            raw_identities(target.rsplit(".", 1)[-1], doc.get("raw"), doc.get("key"))
        ):
            out.suppressed += 1
            continue
        again = rules.check(db, target, doc) if rules is not None else None
        if again is not None:
            out.fail_again[again] = out.fail_again.get(again, 0) + 1
            if skip_failing:
                out.skipped += 1
                continue
        out.sent += 1
        out.by_topic[target] = out.by_topic.get(target, 0) + 1
        if dry_run:
            continue
        key = bytes(doc["key"]) if doc.get("key") is not None else None
        kafka_producer.send(target, key=key, value=bytes(doc["raw"])).get(timeout=30)  # acked before it is marked
        dead.update_one({"_id": doc["_id"]}, {"$set": {"replayed_at": datetime.now(UTC), "replayed_to": target}})
    return out

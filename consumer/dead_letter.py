"""Dead-letter: bad records -> `dead_letters` documents (bytes and key as received), and the broken-producer alarm."""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from datetime import datetime
from typing import Any

from bson import Binary

from consumer.records import BadRecord, Position
from sentencify import contract
from sentencify.logs import kv

log = logging.getLogger("sentencify.consumer")

DEAD_LETTERS = contract.DEAD_LETTERS
# A dead letter is a MongoDB document too: bytes beyond this are cut (and the letter marked truncated).
MAX_KEPT_BYTES = 15 * 1024 * 1024


def dead_letter_doc(
    position: Position, key: bytes | None, value: bytes | None, error: BadRecord, prefix_bytes: int, now: datetime
) -> dict[str, Any]:
    """Delivery: pure; keeps the key and value bytes exactly as received (a prefix when too large);
    `_id` is `letter_id`: a redelivered bad record is stored once, a new one never collides with an old one."""
    raw = value or b""
    limit = prefix_bytes if error.reason == "too_large" else MAX_KEPT_BYTES
    kept = raw[:limit]
    return {
        "_id": letter_id(position, key, value),
        "topic": position.topic,
        "partition": position.partition,
        "offset": position.offset,
        "kafka_timestamp": position.timestamp,
        "key": None if key is None else Binary(key),
        "key_text": None if key is None else key.decode("utf-8", errors="replace"),
        "raw": Binary(kept),
        "raw_text": kept[:prefix_bytes].decode("utf-8", errors="replace"),
        "raw_size": len(raw),
        "truncated": len(kept) < len(raw),
        "reason": error.reason,
        "error": error.detail,
        "failed_at": now,
    }


def letter_id(position: Position, key: bytes | None, value: bytes | None) -> str:
    """`topic:partition:offset:timestamp:digest` - the record's place, its Kafka timestamp (epoch ms, `-`
    when unknown) and the first 16 hex digits of SHA-256 over its key and value.

    The same record read again gives the same id (stored once). Offsets start again at 0 when a topic
    is re-created or ingestion moves to another cluster (events.md "Bad input"): a new record at an old
    offset differs in timestamp or bytes, so it never collides with an old dead letter."""
    digest = hashlib.sha256()
    for part in (key, value):
        digest.update(b"-" if part is None else b"%d:" % len(part))
        digest.update(part or b"")
    stamp = "-" if position.timestamp is None else str(position.timestamp)
    return f"{position.topic}:{position.partition}:{position.offset}:{stamp}:{digest.hexdigest()[:16]}"


def note_dead_letter(metrics: Any, position: Position, error: BadRecord) -> None:
    """Count and log one dead letter (the consumer's loop and its write path both make them)."""
    metrics.inc("sentencify_consumer_dead_letters_total", topic=position.topic, reason=error.reason)
    log.warning(
        "dead letter",
        extra=kv(
            topic=position.topic,
            partition=position.partition,
            offset=position.offset,
            reason=error.reason,
            error=error.detail[:300],
        ),
    )


class BadRatioAlarm:
    """Delivery: pure bookkeeping that never holds a record back; says which partitions' producers look broken.

    A partition is in alarm while more than `max_ratio` of its last `window` records are bad (judged
    only once the window is full). Its records are still dead-lettered one by one, so nothing is lost
    and they can be replayed after the fix; stopping instead would stall every topic of the group.
    """

    def __init__(self, window: int, max_ratio: float) -> None:
        self.window = window
        self.max_ratio = max_ratio
        self._recent: dict[tuple[str, int], deque[bool]] = {}
        self._bad: dict[tuple[str, int], int] = {}
        self.alarms: set[tuple[str, int]] = set()

    def observe(self, tp: tuple[str, int], bad: bool) -> bool | None:
        """Count one record; True when the partition just went into alarm, False when it just left it."""
        recent = self._recent.get(tp)
        if recent is None:
            recent = self._recent[tp] = deque(maxlen=self.window)
            self._bad[tp] = 0
        if len(recent) == self.window:
            self._bad[tp] -= recent[0]
        recent.append(bad)
        self._bad[tp] += bad
        broken = len(recent) == self.window and self._bad[tp] / self.window > self.max_ratio
        if broken == (tp in self.alarms):
            return None
        (self.alarms.add if broken else self.alarms.discard)(tp)
        return broken

    def ratio(self, tp: tuple[str, int]) -> float:
        recent = self._recent.get(tp)
        return self._bad[tp] / len(recent) if recent else 0.0

    def describe(self, tp: tuple[str, int]) -> str:
        return (
            f"{tp[0]}[{tp[1]}]: {self._bad.get(tp, 0)} of the last {len(self._recent.get(tp) or ())} records are bad "
            f"(limit {self.max_ratio:.0%}, DLQ_MAX_BAD_RATIO/DLQ_WINDOW)"
        )

    def forget(self, tps: Any) -> None:
        for tp in tps:
            self._recent.pop(tp, None)
            self._bad.pop(tp, None)
            self.alarms.discard(tp)

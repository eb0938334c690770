"""Dead-letter: bad records -> `dead_letters` documents, and the limit that stops a broken producer."""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from bson import Binary

from consumer.records import BadRecord, Position

DEAD_LETTERS = "dead_letters"


def dead_letter_doc(
    position: Position, key: bytes | None, value: bytes | None, error: BadRecord, prefix_bytes: int, now: datetime
) -> dict[str, Any]:
    """Delivery: pure; `_id` = topic:partition:offset, so a redelivered bad record is stored once."""
    raw = value or b""
    kept = raw if len(raw) <= prefix_bytes or error.reason != "too_large" else raw[:prefix_bytes]
    return {
        "_id": f"{position.topic}:{position.partition}:{position.offset}",
        "topic": position.topic,
        "partition": position.partition,
        "offset": position.offset,
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


class TooManyBadRecords(RuntimeError):
    """More than the allowed share of a partition's recent records are bad: the producer is broken."""


class BadRatioGuard:
    """Delivery: pure bookkeeping; raises before a record that would push a partition over the bad-record limit."""

    def __init__(self, window: int, max_ratio: float) -> None:
        self.window = window
        self.max_ratio = max_ratio
        self._recent: dict[tuple[str, int], deque[bool]] = {}
        self._bad: dict[tuple[str, int], int] = {}

    def observe(self, tp: tuple[str, int], bad: bool) -> None:
        recent = self._recent.get(tp)
        if recent is None:
            recent = self._recent[tp] = deque(maxlen=self.window)
            self._bad[tp] = 0
        evicted = recent[0] if len(recent) == self.window else False
        bad_count = self._bad[tp] + bad - evicted
        window_full = len(recent) + 1 >= self.window  # judge only a full window, not the first few records
        if bad and window_full and bad_count / self.window > self.max_ratio:
            raise TooManyBadRecords(
                f"{bad_count} of the last {self.window} records of {tp[0]}[{tp[1]}] are bad "
                f"(limit {self.max_ratio:.0%}, DLQ_MAX_BAD_RATIO/DLQ_WINDOW): the producer looks broken. "
                "Stopped without dead-lettering the rest; fix the producer (see dead_letters for the errors) "
                "or raise the limit, then restart: nothing past the last good commit was skipped."
            )
        self._bad[tp] = bad_count
        recent.append(bad)

    def forget(self, tps) -> None:
        for tp in tps:
            self._recent.pop(tp, None)
            self._bad.pop(tp, None)

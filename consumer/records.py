"""Value types that flow between the consumer's parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from sentencify.errors import DataError


class Position(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int | None = None  # the Kafka record's timestamp, epoch ms (part of a dead letter's identity)


class BadRecord(DataError):
    """A record that can never be stored as a log; it goes to `dead_letters` with `reason` and `detail`."""

    named = True

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason  # short machine code: not_json, not_object, schema, too_large, unknown_topic, ...
        self.detail = detail  # the error in words, for the operator


@dataclass(slots=True)
class Item:
    """One document waiting in a batch, with the Kafka record it came from (kept for its dead letter)."""

    doc: dict[str, Any]
    position: Position
    key: bytes | None = None
    raw: bytes | None = None  # the value exactly as received

    @property
    def size(self) -> int:
        """Bytes this item stands for in the memory bound (its value as received)."""
        return len(self.raw) if self.raw is not None else 256

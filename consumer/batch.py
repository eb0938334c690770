"""Batch: per-collection buffers that say when a micro-batch is due."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from consumer.records import Item


class Batcher:
    """Delivery: holds items in arrival order until removed after a successful write; never drops on its own.

    A collection's batch is due when its buffer holds `batch_size` items or `batch_bytes` bytes, or
    its oldest item has waited `flush_interval_s`. Batches are at most `batch_size` items and (but
    for a single larger item) `batch_bytes` bytes, oldest first.
    """

    def __init__(self, batch_size: int, flush_interval_s: float, batch_bytes: int = 8 * 1024 * 1024) -> None:
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.batch_bytes = batch_bytes
        self._buffers: dict[str, deque[tuple[float, Item]]] = {}  # (monotonic arrival, item)
        self._bytes: dict[str, int] = {}
        self.total = 0
        self.total_bytes = 0

    def add(self, collection: str, item: Item, now: float) -> bool:
        """Buffer one item; True when that collection now holds a full batch."""
        buf = self._buffers.get(collection)
        if buf is None:
            buf = self._buffers[collection] = deque()
        buf.append((now, item))
        self.total += 1
        self.total_bytes += item.size
        self._bytes[collection] = self._bytes.get(collection, 0) + item.size
        return self._full(collection)

    def _full(self, collection: str) -> bool:
        return len(self._buffers[collection]) >= self.batch_size or self._bytes[collection] >= self.batch_bytes

    def due(self, now: float) -> list[str]:
        """Collections with a full batch or an item older than the flush interval."""
        return [c for c, buf in self._buffers.items() if buf and (self._full(c) or now - buf[0][0] >= self.flush_interval_s)]

    def next_due_in(self, now: float) -> float | None:
        """Seconds until the next age-triggered flush, None when nothing is buffered."""
        oldest = [buf[0][0] for buf in self._buffers.values() if buf]
        if not oldest:
            return None
        return max(0.0, min(oldest) + self.flush_interval_s - now)

    def non_empty(self) -> list[str]:
        return [c for c, buf in self._buffers.items() if buf]

    def peek(self, collection: str) -> list[Item]:
        """The next batch of a collection, oldest first (not removed)."""
        items: list[Item] = []
        size = 0
        for _, item in self._buffers.get(collection) or ():
            if len(items) == self.batch_size or (items and size + item.size > self.batch_bytes):
                break
            items.append(item)
            size += item.size
        return items

    def take(self, collection: str) -> list[Item]:
        """Remove and return the next batch of a collection."""
        items = self.peek(collection)
        self.remove(collection, len(items))
        return items

    def remove(self, collection: str, count: int) -> None:
        """Forget the first `count` items of a collection once they are durably written."""
        buf = self._buffers[collection]
        for _ in range(count):
            size = buf.popleft()[1].size
            self._bytes[collection] -= size
            self.total_bytes -= size
        self.total -= count

    def drop_partitions(self, partitions: Iterable[tuple[str, int]]) -> int:
        """Forget items of revoked partitions (uncommitted, so their new owner re-reads them)."""
        gone = set(partitions)
        dropped = 0
        for collection, buf in self._buffers.items():
            kept = deque(e for e in buf if (e[1].position.topic, e[1].position.partition) not in gone)
            dropped += len(buf) - len(kept)
            self._buffers[collection] = kept
            self._bytes[collection] = sum(e[1].size for e in kept)
        self.total -= dropped
        self.total_bytes = sum(self._bytes.values())
        return dropped

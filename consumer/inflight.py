"""In-flight writes: batches written by a small thread pool while the loop keeps fetching.

Two in-flight writes never hold the same `_id` of one log collection: a record whose key is
already being written waits (in a batch of its own) until that write is accounted, so the
earlier offset of a partition is always written first and wins a conflict (events.md)."""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from consumer.dead_letter import DEAD_LETTERS
from consumer.records import Item
from consumer.validate import stamp_ingested
from consumer.write import MongoWriter, TransientWriteError, WriteOutcome
from sentencify.logs import kv

log = logging.getLogger("sentencify.consumer")


@dataclass(eq=False)  # identity: a batch is found in the queues by `is`
class Batch:
    collection: str
    items: list[Item]
    future: Future | None = None  # set while a writer has it
    size: int = 0  # bytes of its items, counted once (the loop asks for it after every record)
    keys: list[tuple[str, Any]] = field(default_factory=list)  # (collection, _id) it holds; log collections only

    def __post_init__(self) -> None:
        self.size = sum(item.size for item in self.items)

    @property
    def running(self) -> Future:
        assert self.future is not None, "only a submitted batch has a future"
        return self.future


@dataclass
class Written:
    collection: str
    items: list[Item]
    outcome: WriteOutcome


class InFlightWrites:
    """Delivery: a submitted batch is retried (with backoff) until MongoDB takes it; it is only ever
    given up by `abandon()`, whose records stay uncommitted and so are read again.

    Batches may finish out of order; the offset tracker only commits contiguous progress. Records
    of one key of a log collection are written one after the other, in the order submitted.
    """

    def __init__(self, writer: MongoWriter, concurrency: int, backoff_first_s: float, backoff_max_s: float) -> None:
        self.writer = writer
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mongo-write")
        self._running: deque[Batch] = deque()
        self._failed: deque[Batch] = deque()  # waiting for `retry_at`
        self._waiting: deque[Batch] = deque()  # behind an earlier batch holding one of its keys
        self._holders: dict[tuple[str, Any], deque[Batch]] = {}  # key -> batches holding it, in order
        self.retry_at = 0.0
        self._backoff_first = backoff_first_s
        self._backoff_max = backoff_max_s
        self._backoff = backoff_first_s
        self.write_errors = 0

    # -- state --------------------------------------------------------------------------------

    @property
    def failing(self) -> bool:
        """MongoDB refused a batch and the retry is not yet through: hold new batches back."""
        return bool(self._failed)

    def has_room(self) -> bool:
        return not self._failed and len(self._running) < self.concurrency

    def records(self) -> int:
        return sum(len(b.items) for q in (self._running, self._failed, self._waiting) for b in q)

    def bytes(self) -> int:
        return sum(b.size for q in (self._running, self._failed, self._waiting) for b in q)

    def idle(self) -> bool:
        return not self._running and not self._failed and not self._waiting

    # -- work ---------------------------------------------------------------------------------

    def submit(self, collection: str, items: list[Item]) -> None:
        if collection == DEAD_LETTERS:  # a letter's duplicate is always a no-op: no order to keep
            self._start(Batch(collection, items))
            return
        rounds: list[list[Item]] = []  # a key's n-th record of this batch goes in round n
        seen: dict[Any, int] = {}
        for item in items:
            n = seen[item.doc["_id"]] = seen.get(item.doc["_id"], -1) + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(item)
        for part in rounds:
            batch = Batch(collection, part, keys=[(collection, item.doc["_id"]) for item in part])
            for key in batch.keys:
                self._holders.setdefault(key, deque()).append(batch)
            if self._ready(batch) and len(self._running) < self.concurrency and not self._failed:
                self._start(batch)
            else:
                self._waiting.append(batch)

    def _ready(self, batch: Batch) -> bool:
        return all(self._holders[key][0] is batch for key in batch.keys)

    def _release(self, batch: Batch, keys: list[tuple[str, Any]]) -> None:
        for key in keys:
            holders = self._holders[key]
            holders.remove(batch)
            if not holders:
                del self._holders[key]

    def _start(self, batch: Batch) -> None:
        docs = [item.doc for item in batch.items]
        stamp_ingested(docs, datetime.now(UTC))
        batch.future = self._pool.submit(
            self.writer.write,
            batch.collection,
            docs,
            logs=batch.collection != DEAD_LETTERS,
            record_ms=[item.position.timestamp for item in batch.items],
        )
        self._running.append(batch)

    def collect(self, timeout: float = 0.0) -> list[Written]:
        """Finished batches (waiting up to `timeout` for the first one); failed ones are queued for retry."""
        if timeout > 0 and self._running and not any(b.running.done() for b in self._running):
            wait([b.running for b in self._running], timeout=timeout, return_when="FIRST_COMPLETED")
        written: list[Written] = []
        still: deque[Batch] = deque()
        for batch in self._running:
            if not batch.running.done():
                still.append(batch)
                continue
            try:
                written.append(Written(batch.collection, batch.items, batch.running.result()))
            except TransientWriteError as exc:
                self._fail(batch, exc)
            else:
                self._release(batch, batch.keys)
        self._running = still
        if written and not self._failed:
            self._backoff = self._backoff_first
        self._retry_due(progressed=bool(written))
        self._start_waiting()
        return written

    def _start_waiting(self) -> None:
        if self._failed or not self._waiting:
            return
        for batch in list(self._waiting):
            if len(self._running) >= self.concurrency:
                return
            if self._ready(batch):
                self._waiting.remove(batch)
                self._start(batch)

    def _fail(self, batch: Batch, exc: Exception) -> None:
        self.write_errors += 1
        if not self._failed:
            self.retry_at = time.monotonic() + self._backoff
            log.warning(
                "write failed, will retry",
                extra=kv(collection=batch.collection, batch=len(batch.items), error=str(exc)[:300], retry_in_s=self._backoff),
            )
            self._backoff = min(self._backoff * 2, self._backoff_max)
        batch.future = None
        self._failed.append(batch)

    def _retry_due(self, progressed: bool) -> None:
        if not self._failed or time.monotonic() < self.retry_at:
            return
        if not progressed:
            if not self._running:  # one batch probes MongoDB first
                self._start(self._failed.popleft())
            return
        while self._failed and len(self._running) < self.concurrency:  # it got through: the rest follow
            self._start(self._failed.popleft())

    def abandon(self, partitions: set[tuple[str, int]]) -> int:
        """Forget failed batches' records of these partitions (uncommitted: their new owner re-reads them)."""
        dropped = 0
        for queue in (self._failed, self._waiting):
            for batch in list(queue):
                keep = [i for i in batch.items if (i.position.topic, i.position.partition) not in partitions]
                dropped += len(batch.items) - len(keep)
                if batch.keys:
                    kept_keys = [(batch.collection, i.doc["_id"]) for i in keep]
                    self._release(batch, sorted(set(batch.keys) - set(kept_keys), key=repr))
                    batch.keys = kept_keys
                batch.items = keep
                batch.size = sum(item.size for item in keep)
                if not keep:
                    queue.remove(batch)
        self._start_waiting()
        return dropped

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

"""In-flight writes: batches written by a small thread pool while the loop keeps fetching."""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime

from consumer.records import Item
from consumer.validate import stamp_ingested
from consumer.write import MongoWriter, TransientWriteError, WriteOutcome
from sentencify.logs import kv

log = logging.getLogger("sentencify.consumer")


@dataclass
class Batch:
    collection: str
    items: list[Item]
    future: Future | None = None  # set while a writer has it
    size: int = 0  # bytes of its items, counted once (the loop asks for it after every record)

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

    Batches may finish out of order; the offset tracker only commits contiguous progress.
    """

    def __init__(self, writer: MongoWriter, concurrency: int, backoff_first_s: float, backoff_max_s: float) -> None:
        self.writer = writer
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mongo-write")
        self._running: deque[Batch] = deque()
        self._failed: deque[Batch] = deque()  # waiting for `retry_at`
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
        return sum(len(b.items) for b in self._running) + sum(len(b.items) for b in self._failed)

    def bytes(self) -> int:
        return sum(b.size for b in self._running) + sum(b.size for b in self._failed)

    def idle(self) -> bool:
        return not self._running and not self._failed

    # -- work ---------------------------------------------------------------------------------

    def submit(self, collection: str, items: list[Item]) -> None:
        self._start(Batch(collection, items))

    def _start(self, batch: Batch) -> None:
        docs = [item.doc for item in batch.items]
        stamp_ingested(docs, datetime.now(UTC))
        batch.future = self._pool.submit(self.writer.write, batch.collection, docs)
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
        self._running = still
        if written and not self._failed:
            self._backoff = self._backoff_first
        self._retry_due(progressed=bool(written))
        return written

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
        for batch in list(self._failed):
            keep = [i for i in batch.items if (i.position.topic, i.position.partition) not in partitions]
            dropped += len(batch.items) - len(keep)
            batch.items = keep
            batch.size = sum(item.size for item in keep)
            if not keep:
                self._failed.remove(batch)
        return dropped

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

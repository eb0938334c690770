"""The write path: batch -> in-flight writes -> account, with the offset tracker that decides what may be committed."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from consumer.batch import Batcher
from consumer.dead_letter import DEAD_LETTERS, dead_letter_doc, note_dead_letter
from consumer.inflight import InFlightWrites, Written
from consumer.metrics import Metrics
from consumer.offsets import TP, OffsetTracker
from consumer.records import BadRecord, Item
from sentencify.logs import kv

log = logging.getLogger("sentencify.consumer")


class WritePath:
    """Delivery: a record's offset becomes committable only once it is stored, a duplicate, or dead-lettered;
    a document MongoDB refuses for its content, or that conflicts with the stored record of its key,
    becomes a dead letter with its original bytes and key (offset committable once the letter is written)."""

    def __init__(
        self, batcher: Batcher, writes: InFlightWrites, tracker: OffsetTracker, metrics: Metrics, dead_letter_prefix_bytes: int
    ) -> None:
        self.batcher = batcher
        self.writes = writes
        self.tracker = tracker
        self.metrics = metrics
        self.prefix_bytes = dead_letter_prefix_bytes
        self.last_progress = time.monotonic()
        self._errors_counted = 0

    # -- what is held ----------------------------------------------------------------------------

    def records(self) -> int:
        return self.batcher.total + self.writes.records()

    def bytes(self) -> int:
        return self.batcher.total_bytes + self.writes.bytes()

    def idle(self) -> bool:
        return not self.batcher.total and self.writes.idle()

    @property
    def failing(self) -> bool:
        return self.writes.failing

    # -- work ------------------------------------------------------------------------------------

    def add(self, collection: str, item: Item) -> None:
        """Track the record's offset and buffer its document; a full batch goes to a writer at once."""
        self.tracker.track((item.position.topic, item.position.partition), item.position.offset)
        if self.batcher.add(collection, item, time.monotonic()):
            self.flush(collection)

    def flush_due(self) -> None:
        for collection in self.batcher.due(time.monotonic()):
            while collection in self.batcher.due(time.monotonic()):
                if not self.flush(collection):
                    return

    def flush(self, collection: str) -> bool:
        """Hand the collection's next batch to a writer; False when writers are busy or MongoDB is failing."""
        if not self.writes.has_room():
            self.collect(timeout=0.0)
            if not self.writes.has_room():
                return False
        items = self.batcher.take(collection)
        if items:
            self.writes.submit(collection, items)
        return True

    def collect(self, timeout: float = 0.0) -> None:
        """Account for finished writes: offsets become committable, refused documents become dead letters."""
        for written in self.writes.collect(timeout):
            self._account(written)
        self.metrics.inc("sentencify_consumer_write_errors_total", self.writes.write_errors - self._errors_counted)
        self._errors_counted = self.writes.write_errors

    def drain(self, deadline: float) -> None:
        """Write everything buffered, retrying until `deadline`."""
        while not self.idle() and time.monotonic() < deadline:
            for collection in self.batcher.non_empty():
                if not self.flush(collection):
                    break
            self.collect(timeout=0.1)
            if self.writes.failing:
                time.sleep(min(0.2, max(0.0, self.writes.retry_at - time.monotonic())))
        if not self.idle():
            log.warning(
                "unwritten records left; they are not committed and will be read again", extra=kv(unwritten=self.records())
            )

    def drop(self, partitions: Iterable[TP]) -> int:
        """Forget revoked partitions' unwritten records (uncommitted: their new owner re-reads them)."""
        gone = set(partitions)
        dropped = self.batcher.drop_partitions(gone) + self.writes.abandon(gone)
        self.tracker.forget(gone)
        return dropped

    # -- accounting ------------------------------------------------------------------------------

    def _account(self, written: Written) -> None:
        collection, items, outcome = written.collection, written.items, written.outcome
        self.last_progress = time.monotonic()
        logs = collection != DEAD_LETTERS
        for index, item in enumerate(items):
            if index in outcome.suppressed:  # an erased user's record: neither stored nor dead-lettered
                self.tracker.done((item.position.topic, item.position.partition), item.position.offset)
                self.metrics.inc("sentencify_consumer_records_total", topic=item.position.topic, outcome="suppressed")
                continue
            reason = outcome.rejected.get(index)
            if reason is not None:  # stays tracked until its dead letter is written
                self._dead_letter_after_write(collection, item, BadRecord("rejected_by_mongodb", reason))
                continue
            conflict = outcome.conflicts.get(index)
            if conflict is not None:
                self._dead_letter_after_write(collection, item, BadRecord("conflict", conflict))
                continue
            self.tracker.done((item.position.topic, item.position.partition), item.position.offset)
            event_time = item.doc.get("created_at") or item.doc.get("last_updated")
            if logs and isinstance(event_time, datetime):
                age = (item.doc["ingested_at"] - event_time).total_seconds()
                self.metrics.observe("sentencify_consumer_record_age_seconds", max(0.0, age), topic=item.position.topic)
        self.metrics.inc("sentencify_consumer_batches_total", collection=collection)
        self.metrics.inc("sentencify_consumer_batch_records_total", len(items), collection=collection)
        self.metrics.observe("sentencify_consumer_write_duration_seconds", outcome.seconds, collection=collection)
        if logs:
            topic = items[0].position.topic
            self.metrics.inc("sentencify_consumer_records_total", outcome.inserted, topic=topic, outcome="stored")
            self.metrics.inc("sentencify_consumer_records_total", outcome.duplicates, topic=topic, outcome="duplicate")

    def _dead_letter_after_write(self, collection: str, item: Item, err: BadRecord) -> None:
        now = datetime.now(UTC)
        if collection == DEAD_LETTERS:  # the letter itself was refused: keep a prefix, never loop
            if item.doc.get("truncated") and not item.doc.get("raw"):
                log.error(
                    "dead letter refused even without its bytes; offset released",
                    extra=kv(id=item.doc.get("_id"), error=err.detail[:300]),
                )
                self.tracker.done((item.position.topic, item.position.partition), item.position.offset)
                return
            doc = dict(item.doc, raw=b"", truncated=True, error=f"{item.doc.get('error')}; letter refused: {err.detail}")
        else:
            doc = dead_letter_doc(item.position, item.key, item.raw, err, self.prefix_bytes, now)
            note_dead_letter(self.metrics, item.position, err)
        self.batcher.add(DEAD_LETTERS, Item(doc, item.position, item.key, item.raw), time.monotonic())

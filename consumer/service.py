"""The ingestion loop: poll -> decode -> route -> validate -> batch -> write -> commit, with dead letters.

Delivery: at-least-once from Kafka, exactly-once in MongoDB (idempotent `_id`s); an offset is
committed only after every record before it is written or dead-lettered.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from datetime import datetime, timezone

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from consumer.batch import Batcher
from consumer.dead_letter import DEAD_LETTERS, BadRatioGuard, TooManyBadRecords, dead_letter_doc
from consumer.decode import decode
from consumer.metrics import Metrics, MetricsServer
from consumer.offsets import OffsetTracker
from consumer.records import BadRecord, Item, Position
from consumer.route import Router
from consumer.status import StatusPublisher
from consumer.inflight import InFlightWrites, Written
from consumer.validate import Validator
from consumer.write import MongoWriter
from sentencify import mongo
from sentencify.logs import kv
from sentencify.settings import Settings

log = logging.getLogger("sentencify.consumer")

EXIT_OK = 0
EXIT_BAD_PRODUCER = 3
EXIT_NO_ASSIGNMENT = 4

MAX_POLL_RECORDS = 500
MAX_POLL_WAIT_S = 0.5
BUSY_POLL_WAIT_S = 0.02
MIN_POLL_WAIT_S = 0.005
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 15.0
LAG_REFRESH_S = 1.0
FETCH_MAX_BYTES = 32 * 1024 * 1024
NO_ASSIGNMENT_LIMIT_S = 120.0


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: "IngestService") -> None:
        self.service = service

    def on_partitions_revoked(self, revoked):
        self.service._on_revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self.service._on_assigned(assigned)


class IngestService:
    """One consumer-group member. `run()` returns a process exit code."""

    def __init__(
        self,
        settings: Settings,
        *,
        until_idle_s: float | None = None,
        group_id: str | None = None,
        mongo_client: MongoClient | None = None,
        metrics_port: int | None = None,
        install_signal_handlers: bool = True,
        publish_status: bool = True,
    ) -> None:
        self.settings = settings
        self.until_idle_s = until_idle_s
        self.group_id = group_id or settings.consumer_group
        self.router = Router(settings.topic_prefix)
        self.validator = Validator(settings.embedding_dim)
        self.batcher = Batcher(settings.batch_size, settings.flush_interval_ms / 1000)
        self.tracker = OffsetTracker()
        self.guard = BadRatioGuard(settings.dlq_window, settings.dlq_max_bad_ratio)
        self.metrics = Metrics()
        self._mongo = mongo_client
        self._metrics_port = settings.metrics_port if metrics_port is None else metrics_port
        self._install_signals = install_signal_handlers
        self._stop = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self.writes: InFlightWrites | None = None
        self._paused = False
        self._assigned: set[tuple[str, int]] = set()
        self._last_activity: float | None = None  # monotonic; set on assignment and on every record
        self._last_lag = 0.0
        self.metrics_server: MetricsServer | None = None
        self.status = StatusPublisher(settings.redis_url if publish_status else None, self.group_id)

    # -- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to flush, commit and exit (what SIGTERM/SIGINT do)."""
        self._stop.set()

    def run(self) -> int:
        if self._install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        if self._metrics_port >= 0:
            self.metrics_server = MetricsServer(self.metrics, self._metrics_port).start()
            log.info("metrics", extra=kv(url=f"http://127.0.0.1:{self.metrics_server.port}/metrics"))
        own_mongo = self._mongo is None
        client = self._mongo or mongo.client(self.settings.mongo_uri, app_name="sentencify-consumer")
        try:
            db = client[self.settings.mongo_db]
            if not self._wait_for_mongo(db):
                return EXIT_OK
            self.writes = InFlightWrites(MongoWriter(db), self.settings.write_concurrency, BACKOFF_FIRST_S, BACKOFF_MAX_S)
            self._consumer = self._make_consumer()
            return self._loop()
        finally:
            if self.writes is not None:
                self.writes.close()
            if self._consumer is not None:
                try:
                    self._refresh_lag(final=True)  # the lag it leaves behind stays on the dashboard
                except Exception as exc:  # noqa: BLE001 (status is best effort; shutdown goes on)
                    log.debug("final lag not published", extra=kv(error=str(exc)[:200]))
                self._consumer.close(autocommit=False)
            if own_mongo:
                client.close()
            if self.metrics_server:
                self.metrics_server.stop()
            self.status.close()

    def _wait_for_mongo(self, db) -> bool:
        delay = BACKOFF_FIRST_S
        while not self._stop.is_set():
            try:
                mongo.ensure_indexes(db)
                return True
            except PyMongoError as exc:
                log.warning("MongoDB not reachable, retrying", extra=kv(error=str(exc)[:200], retry_in_s=delay))
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        return False

    def _make_consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
            group_id=self.group_id,
            client_id=f"sentencify-ingest-{self.group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a new group must not skip what is already there
            max_poll_records=MAX_POLL_RECORDS,
            # Records above MAX_RECORD_BYTES must still be fetched, to be dead-lettered.
            max_partition_fetch_bytes=max(1024 * 1024, self.settings.max_record_bytes * 2),
            fetch_max_bytes=FETCH_MAX_BYTES,
            # A fetch response is one network frame; kafka-python's 1 MB default frame limit is too small for it.
            receive_message_max_bytes=FETCH_MAX_BYTES * 2,
            metadata_max_age_ms=30_000,  # notice new (unknown) topics under the prefix
        )
        # A pattern, not the seven names: a record on an unknown topic under the prefix is dead-lettered.
        consumer.subscribe(pattern=f"^{re.escape(self.settings.topic_prefix)}.*", listener=_Rebalance(self))
        log.info(
            "subscribed",
            extra=kv(group=self.group_id, prefix=self.settings.topic_prefix, bootstrap=self.settings.kafka_bootstrap_servers),
        )
        return consumer

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> int:
        started = time.monotonic()
        consumer = self._consumer
        while not self._stop.is_set():
            records = consumer.poll(timeout_ms=int(self._poll_wait() * 1000), max_records=MAX_POLL_RECORDS)
            self.metrics.set("sentencify_consumer_last_poll_seconds", time.time())
            try:
                for batch in records.values():
                    for msg in batch:
                        self._handle(msg)
                self._flush_due()
                self._collect()
            except TooManyBadRecords as exc:
                log.error("stopping: too many bad records", extra=kv(error=str(exc)))
                self.metrics.healthy, self.metrics.unhealthy_reason = False, str(exc)
                self._drain(time.monotonic() + self.settings.shutdown_timeout_s)
                return EXIT_BAD_PRODUCER
            self._commit()
            self._refresh_lag()
            if self._idle_done(started):
                log.info("idle, exiting", extra=kv(idle_s=self.until_idle_s, **self._summary()))
                break
            if not self._assigned and time.monotonic() - started > NO_ASSIGNMENT_LIMIT_S and self.until_idle_s:
                log.error("no partitions assigned: is the broker up and are the topics created? (`sentencify stack up`)")
                return EXIT_NO_ASSIGNMENT
        self._drain(time.monotonic() + self.settings.shutdown_timeout_s)
        log.info("stopped", extra=kv(**self._summary()))
        return EXIT_OK

    def _poll_wait(self) -> float:
        """How long the next poll may block: until the next batch is due, a retry, or a writer finishes.

        Never zero: a poll(0) loop would hold the GIL and starve the writer threads.
        """
        now = time.monotonic()
        if self.writes.failing:
            return min(MAX_POLL_WAIT_S, max(MIN_POLL_WAIT_S, self.writes.retry_at - now))
        if self.batcher.due(now) and not self.writes.has_room():
            self._collect(timeout=MAX_POLL_WAIT_S)  # a full batch waits for a writer: block on the writers
        wait = MAX_POLL_WAIT_S
        due_in = self.batcher.next_due_in(now)
        if due_in is not None:
            wait = min(wait, due_in)
        if not self.writes.idle():
            wait = min(wait, BUSY_POLL_WAIT_S)  # come back soon to account for finished writes
        return max(wait, MIN_POLL_WAIT_S)

    def _handle(self, msg) -> None:
        position = Position(msg.topic, msg.partition, msg.offset)
        tp = (msg.topic, msg.partition)
        self._last_activity = time.monotonic()
        try:
            event_type = self.router.route(msg.topic)
            doc = self.validator.validate(event_type, decode(msg.value, self.settings.max_record_bytes), position)
            collection = event_type.name
            self.guard.observe(tp, bad=False)
        except BadRecord as err:
            self.guard.observe(tp, bad=True)  # raises TooManyBadRecords before this record is tracked
            doc = dead_letter_doc(position, msg.key, msg.value, err, self.settings.dead_letter_prefix_bytes, _utcnow())
            collection = DEAD_LETTERS
            self.metrics.inc("sentencify_consumer_dead_letters_total", topic=msg.topic, reason=err.reason)
            log.warning("dead letter", extra=kv(topic=msg.topic, partition=msg.partition, offset=msg.offset, reason=err.reason, error=err.detail[:300]))
        self.tracker.track(tp, msg.offset)
        if self.batcher.add(collection, Item(doc, position), self._last_activity):
            self._flush(collection)
        if self._buffered() >= self.settings.max_buffered_records:
            self._pause("buffer full")

    # -- writing -------------------------------------------------------------------------------

    def _buffered(self) -> int:
        return self.batcher.total + self.writes.records()

    def _flush_due(self) -> None:
        for collection in self.batcher.due(time.monotonic()):
            while collection in self.batcher.due(time.monotonic()):
                if not self._flush(collection):
                    return

    def _flush(self, collection: str) -> bool:
        """Hand the collection's next batch to a writer; False when writers are busy or MongoDB is failing."""
        if not self.writes.has_room():
            self._collect(timeout=0.0)
            if not self.writes.has_room():
                return False
        items = self.batcher.take(collection)
        if items:
            self.writes.submit(collection, items)
        return True

    def _collect(self, timeout: float = 0.0) -> None:
        """Account for finished writes: offsets become committable, rejected documents become dead letters."""
        for written in self.writes.collect(timeout):
            self._account(written)
        self.metrics.set("sentencify_consumer_write_errors_total", self.writes.write_errors)
        if self.writes.failing:
            self._pause("MongoDB not taking writes")
        elif self._paused and self._buffered() < self.settings.max_buffered_records // 2:
            self._resume()

    def _account(self, written: Written) -> None:
        collection, items, outcome = written.collection, written.items, written.outcome
        self._last_activity = time.monotonic()  # idleness counts from the last progress, not the last fetch
        now = _utcnow()
        for index, item in enumerate(items):
            reason = outcome.rejected.get(index)
            if reason is None:
                self.tracker.done((item.position.topic, item.position.partition), item.position.offset)
            else:  # stays tracked until its dead letter is written
                self._reject_after_write(item, reason, now)
        self.metrics.inc("sentencify_consumer_batches_total", collection=collection)
        self.metrics.inc("sentencify_consumer_batch_records_total", len(items), collection=collection)
        if collection != DEAD_LETTERS:
            topic = items[0].position.topic
            self.metrics.inc("sentencify_consumer_records_total", outcome.inserted, topic=topic, outcome="stored")
            self.metrics.inc("sentencify_consumer_records_total", outcome.duplicates, topic=topic, outcome="duplicate")

    def _reject_after_write(self, item: Item, reason: str, now: datetime) -> None:
        from bson import json_util

        raw = json_util.dumps({k: v for k, v in item.doc.items() if k != "ingested_at"}).encode()
        err = BadRecord("rejected_by_mongodb", reason)
        doc = dead_letter_doc(item.position, None, raw, err, self.settings.dead_letter_prefix_bytes, now)
        self.metrics.inc("sentencify_consumer_dead_letters_total", topic=item.position.topic, reason=err.reason)
        self.batcher.add(DEAD_LETTERS, Item(doc, item.position), time.monotonic())

    def _drain(self, deadline: float) -> None:
        """Write everything buffered (retrying until `deadline`), then commit what is written."""
        while (self.batcher.total or not self.writes.idle()) and time.monotonic() < deadline:
            for collection in self.batcher.non_empty():
                if not self._flush(collection):
                    break
            self._collect(timeout=0.1)
            if self.writes.failing:
                time.sleep(min(0.2, max(0.0, self.writes.retry_at - time.monotonic())))
        if self._buffered():
            log.warning(
                "shutdown with unwritten records; they are not committed and will be read again",
                extra=kv(unwritten=self._buffered()),
            )
        self._commit()

    # -- offsets -------------------------------------------------------------------------------

    def _commit(self, only=None) -> None:
        offsets = self.tracker.committable(self._assigned if only is None else only)
        if not offsets or self._consumer is None:
            return
        try:
            self._consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})
        except KafkaError as exc:  # e.g. a rebalance in flight; the records are re-read and are no-ops
            log.warning("commit failed", extra=kv(error=str(exc)[:300]))
            return
        self.tracker.mark_committed(offsets)
        self.metrics.inc("sentencify_consumer_commits_total")

    def _on_assigned(self, assigned) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in assigned}
        self._last_activity = time.monotonic()
        self.metrics.set("sentencify_consumer_assigned_partitions", len(self._assigned))
        log.info("partitions assigned", extra=kv(partitions=sorted(f"{t}[{p}]" for t, p in self._assigned)))
        if self._paused:
            self._consumer.pause(*assigned)

    def _on_revoked(self, revoked) -> None:
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self._drain(time.monotonic() + self.settings.shutdown_timeout_s)
        self._commit(only=gone)
        dropped = self.batcher.drop_partitions(gone) + self.writes.abandon(gone)
        self.tracker.forget(gone)
        self.guard.forget(gone)
        self._assigned -= gone
        self.metrics.clear("sentencify_consumer_lag")
        log.info("partitions revoked", extra=kv(count=len(gone), dropped_unwritten=dropped))

    # -- backpressure, lag, idleness -----------------------------------------------------------

    def _pause(self, why: str) -> None:
        if not self._paused and self._consumer is not None:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
            self.metrics.set("sentencify_consumer_paused", 1)
            log.warning("fetching paused", extra=kv(reason=why, buffered=self._buffered()))

    def _resume(self) -> None:
        self._consumer.resume(*self._consumer.paused())
        self._paused = False
        self._last_activity = time.monotonic()  # a paused stretch is not idleness: records may be waiting
        self.metrics.set("sentencify_consumer_paused", 0)
        log.info("fetching resumed", extra=kv(buffered=self._buffered()))

    def _refresh_lag(self, final: bool = False) -> None:
        now = time.monotonic()
        self.metrics.set("sentencify_consumer_buffered_records", self._buffered())
        if now - self._last_lag < LAG_REFRESH_S and not final:
            return
        self._last_lag = now
        lags = {}
        for topic, partition in self._assigned:
            highwater = self._consumer.highwater(TopicPartition(topic, partition))
            committed = self.tracker.committed((topic, partition))
            if highwater is not None and committed is not None:
                lags[f"{topic}[{partition}]"] = max(0, highwater - committed)
                self.metrics.set("sentencify_consumer_lag", lags[f"{topic}[{partition}]"], topic=topic, partition=partition)
        self.status.maybe_publish(lags, self._summary(), force=final)

    def lag(self) -> int:
        return int(self.metrics.total("sentencify_consumer_lag"))

    def _idle_done(self, started: float) -> bool:
        if self.until_idle_s is None or not self._assigned or self._last_activity is None or self._paused:
            return False
        if self._buffered() or not self.writes.idle() or self.tracker.committable(self._assigned):
            return False
        return time.monotonic() - self._last_activity >= self.until_idle_s

    def _summary(self) -> dict[str, int]:
        return {
            "stored": int(self.metrics.sum_where("sentencify_consumer_records_total", outcome="stored")),
            "duplicates": int(self.metrics.sum_where("sentencify_consumer_records_total", outcome="duplicate")),
            "dead_letters": int(self.metrics.total("sentencify_consumer_dead_letters_total")),
        }

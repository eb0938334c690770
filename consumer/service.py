"""The ingestion loop: poll -> decode -> route -> validate -> batch -> write -> commit, with dead letters.

Delivery: at-least-once from Kafka, exactly-once in MongoDB (idempotent `_id`s); an offset is
committed only after every record before it is written or dead-lettered. No record stops the
loop: whatever fails because of one record dead-letters that record.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from datetime import UTC, datetime

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from consumer.batch import Batcher
from consumer.dead_letter import DEAD_LETTERS, BadRatioAlarm, dead_letter_doc, note_dead_letter
from consumer.inflight import InFlightWrites
from consumer.metrics import Metrics, MetricsServer
from consumer.offsets import OffsetTracker
from consumer.records import BadRecord, Item, Position
from consumer.route import Router
from consumer.status import StatusPublisher
from consumer.validate import Validator, to_document
from consumer.write import MongoWriter
from consumer.writepath import WritePath
from sentencify import mongo
from sentencify.kafka_config import kafka_security
from sentencify.logs import kv
from sentencify.settings import Settings

log = logging.getLogger("sentencify.consumer")

EXIT_OK = 0
EXIT_NO_ASSIGNMENT = 4

MAX_POLL_RECORDS = 500
MAX_POLL_WAIT_S = 0.5
BUSY_POLL_WAIT_S = 0.02
MIN_POLL_WAIT_S = 0.005
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 15.0
LAG_REFRESH_S = 1.0
FETCH_MAX_BYTES = 16 * 1024 * 1024
NO_ASSIGNMENT_LIMIT_S = 120.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: IngestService) -> None:
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
        self.alarm = BadRatioAlarm(settings.dlq_window, settings.dlq_max_bad_ratio)
        self.metrics = Metrics()
        self.path: WritePath | None = None
        self._mongo = mongo_client
        self._metrics_port = settings.metrics_port if metrics_port is None else metrics_port
        self._install_signals = install_signal_handlers
        self._stop = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._paused = False
        self._assigned: set[tuple[str, int]] = set()
        self._last_activity: float | None = None  # monotonic; set on assignment, every record and every write
        self._last_lag = 0.0
        self._record_bytes = 1024.0  # running mean of value sizes: how many records a poll may take
        self.metrics_server: MetricsServer | None = None
        self.status = StatusPublisher(settings.redis_url if publish_status else None, self.group_id)

    @property
    def _w(self) -> WritePath:
        assert self.path is not None, "the write path exists once run() has started"
        return self.path

    @property
    def _kafka(self) -> KafkaConsumer:
        assert self._consumer is not None, "the Kafka consumer exists once run() has started"
        return self._consumer

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
        client = self._mongo or mongo.client(
            self.settings.mongo_uri, app_name="sentencify-consumer", socket_timeout_s=mongo.WRITE_TIMEOUT_S
        )
        writes = None
        try:
            db = client[self.settings.mongo_db]
            if not self._wait_for_mongo(db):
                return EXIT_OK
            writes = InFlightWrites(MongoWriter(db), self.settings.write_concurrency, BACKOFF_FIRST_S, BACKOFF_MAX_S)
            batcher = Batcher(self.settings.batch_size, self.settings.flush_interval_ms / 1000)
            self.path = WritePath(batcher, writes, OffsetTracker(), self.metrics, self.settings.dead_letter_prefix_bytes)
            self._consumer = self._make_consumer()
            return self._loop()
        finally:
            if writes is not None:
                writes.close()
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
            # A transactional producer's aborted records are never ingested (the local broker has no
            # transactions; there this only changes the fetch request).
            isolation_level="read_committed",
            max_poll_records=MAX_POLL_RECORDS,
            # Records above MAX_RECORD_BYTES must still be fetched, to be dead-lettered.
            max_partition_fetch_bytes=max(1024 * 1024, self.settings.max_record_bytes * 2),
            fetch_max_bytes=FETCH_MAX_BYTES,
            # A fetch response is one network frame; kafka-python's 1 MB default frame limit is too small for it.
            receive_message_max_bytes=FETCH_MAX_BYTES * 2,
            metadata_max_age_ms=30_000,  # notice new (unknown) topics under the prefix
            **kafka_security(self.settings),
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
        while not self._stop.is_set():
            for batch in self._poll().values():
                for msg in batch:
                    self._handle(msg)
            self._w.flush_due()
            self._collect()
            self._commit()
            self._refresh_lag()
            if self._idle_done():
                log.info("idle, exiting", extra=kv(idle_s=self.until_idle_s, **self._summary()))
                break
            if not self._assigned and time.monotonic() - started > NO_ASSIGNMENT_LIMIT_S and self.until_idle_s:
                log.error("no partitions assigned: is the broker up and are the topics created? (`sentencify stack up`)")
                return EXIT_NO_ASSIGNMENT
        self._w.drain(time.monotonic() + self.settings.shutdown_timeout_s)
        self._commit()
        log.info("stopped", extra=kv(**self._summary()))
        return EXIT_OK

    def _poll(self) -> dict:
        """One poll, sized so the records it returns fit in the memory bound; a broker-side failure is
        logged and retried (the partitions' positions do not move, so nothing is skipped)."""
        room = max(0, self.settings.max_buffered_bytes - self._w.bytes())
        max_records = int(min(MAX_POLL_RECORDS, max(1, room // self._record_bytes)))
        try:
            records = self._kafka.poll(timeout_ms=int(self._poll_wait() * 1000), max_records=max_records)
        except KafkaError as exc:
            log.error("fetch failed, retrying", extra=kv(error=f"{type(exc).__name__}: {exc}"[:300]))
            self.metrics.degraded["fetch"] = f"fetch failing: {type(exc).__name__}: {exc}"[:300]
            self._stop.wait(BACKOFF_FIRST_S)
            return {}
        self.metrics.degraded.pop("fetch", None)
        self.metrics.set("sentencify_consumer_last_poll_timestamp_seconds", time.time())
        return records

    def _poll_wait(self) -> float:
        """How long the next poll may block: until the next batch is due, a retry, or a writer finishes.

        Never zero: a poll(0) loop would hold the GIL and starve the writer threads.
        """
        now = time.monotonic()
        writes, batcher = self._w.writes, self._w.batcher
        if writes.failing:
            return min(MAX_POLL_WAIT_S, max(MIN_POLL_WAIT_S, writes.retry_at - now))
        if batcher.due(now) and not writes.has_room():
            self._collect(timeout=MAX_POLL_WAIT_S)  # a full batch waits for a writer: block on the writers
        wait = MAX_POLL_WAIT_S
        due_in = batcher.next_due_in(now)
        if due_in is not None:
            wait = min(wait, due_in)
        if not writes.idle():
            wait = min(wait, BUSY_POLL_WAIT_S)  # come back soon to account for finished writes
        return max(wait, MIN_POLL_WAIT_S)

    def _handle(self, msg) -> None:
        """One record -> a document of its collection, or a dead letter; never raises because of the record."""
        position = Position(msg.topic, msg.partition, msg.offset, msg.timestamp)
        tp = (msg.topic, msg.partition)
        self._last_activity = time.monotonic()
        size = len(msg.value) if msg.value is not None else 0
        self._record_bytes += (max(size, 64) - self._record_bytes) * 0.05
        try:
            collection, doc = to_document(self.router, self.validator, self.settings.max_record_bytes, position, msg.value)
        except BadRecord as err:
            doc, collection = self._dead_letter(msg, position, err), DEAD_LETTERS
        self._observe(tp, bad=collection == DEAD_LETTERS)
        self._w.add(collection, Item(doc, position, msg.key, msg.value))
        self._backpressure()

    def _dead_letter(self, msg, position: Position, err: BadRecord) -> dict:
        note_dead_letter(self.metrics, position, err)
        return dead_letter_doc(position, msg.key, msg.value, err, self.settings.dead_letter_prefix_bytes, _utcnow())

    def _observe(self, tp: tuple[str, int], bad: bool) -> None:
        """The broken-producer alarm: raised and cleared per partition; ingestion goes on either way."""
        changed = self.alarm.observe(tp, bad)
        if changed is None:
            return
        key, labels = f"producer:{tp[0]}[{tp[1]}]", {"topic": tp[0], "partition": tp[1]}
        self.metrics.set("sentencify_consumer_producer_alarm", int(changed), **labels)
        self.metrics.set("sentencify_consumer_bad_ratio", self.alarm.ratio(tp), **labels)
        if changed:
            why = (
                f"producer looks broken: {self.alarm.describe(tp)}; its records are dead-lettered "
                "(replay them with `sentencify replay-dead-letters` after the fix)"
            )
            self.metrics.degraded[key] = why
            log.error("producer looks broken", extra=kv(topic=tp[0], partition=tp[1], detail=why))
        else:
            self.metrics.degraded.pop(key, None)
            log.info("producer recovered", extra=kv(topic=tp[0], partition=tp[1]))

    # -- writing and backpressure --------------------------------------------------------------

    def _collect(self, timeout: float = 0.0) -> None:
        self._w.collect(timeout)
        self._backpressure()

    def _backpressure(self) -> None:
        """Fetching pauses while MongoDB refuses writes or the buffer is over either bound; resumes below half."""
        path, s = self._w, self.settings
        if path.failing:
            self.metrics.degraded["mongodb"] = "MongoDB not taking writes; retrying with backoff, fetching paused"
            self._pause("MongoDB not taking writes")
            return
        self.metrics.degraded.pop("mongodb", None)
        if path.records() >= s.max_buffered_records or path.bytes() >= s.max_buffered_bytes:
            self._pause("buffer full")
        elif self._paused and path.records() < s.max_buffered_records // 2 and path.bytes() < s.max_buffered_bytes // 2:
            self._resume()

    # -- offsets -------------------------------------------------------------------------------

    def _commit(self, only=None) -> None:
        offsets = self._w.tracker.committable(self._assigned if only is None else only)
        if not offsets or self._consumer is None:
            return
        try:
            self._kafka.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})
        except KafkaError as exc:  # e.g. a rebalance in flight; the records are re-read and are no-ops
            log.warning("commit failed", extra=kv(error=str(exc)[:300]))
            return
        self._w.tracker.mark_committed(offsets)
        self.metrics.inc("sentencify_consumer_commits_total")

    def _on_assigned(self, assigned) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in assigned}
        self._last_activity = time.monotonic()
        self.metrics.set("sentencify_consumer_assigned_partitions", len(self._assigned))
        log.info("partitions assigned", extra=kv(partitions=sorted(f"{t}[{p}]" for t, p in self._assigned)))
        if self._paused:
            self._kafka.pause(*assigned)

    def _on_revoked(self, revoked) -> None:
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self._w.drain(time.monotonic() + self.settings.shutdown_timeout_s)
        self._commit(only=gone)
        dropped = self._w.drop(gone)
        for tp in gone & self.alarm.alarms:
            self.metrics.degraded.pop(f"producer:{tp[0]}[{tp[1]}]", None)
        self.alarm.forget(gone)
        self._assigned -= gone
        self.metrics.clear("sentencify_consumer_lag_records")
        log.info("partitions revoked", extra=kv(count=len(gone), dropped_unwritten=dropped))

    # -- pause, lag, idleness ------------------------------------------------------------------

    def _pause(self, why: str) -> None:
        if not self._paused and self._consumer is not None:
            self._kafka.pause(*self._kafka.assignment())
            self._paused = True
            self.metrics.set("sentencify_consumer_paused", 1)
            log.warning("fetching paused", extra=kv(reason=why, buffered=self._w.records(), buffered_bytes=self._w.bytes()))

    def _resume(self) -> None:
        self._kafka.resume(*self._kafka.paused())
        self._paused = False
        self._last_activity = time.monotonic()  # a paused stretch is not idleness: records may be waiting
        self.metrics.set("sentencify_consumer_paused", 0)
        log.info("fetching resumed", extra=kv(buffered=self._w.records()))

    def _refresh_lag(self, final: bool = False) -> None:
        now = time.monotonic()
        self.metrics.set("sentencify_consumer_buffered_records", self._w.records())
        self.metrics.set("sentencify_consumer_buffered_bytes", self._w.bytes())
        for tp in self.alarm.alarms:
            self.metrics.set("sentencify_consumer_bad_ratio", self.alarm.ratio(tp), topic=tp[0], partition=tp[1])
        if now - self._last_lag < LAG_REFRESH_S and not final:
            return
        self._last_lag = now
        lags = {}
        for topic, partition in self._assigned:
            highwater = self._kafka.highwater(TopicPartition(topic, partition))
            committed = self._w.tracker.committed((topic, partition))
            if highwater is not None and committed is not None:
                lags[f"{topic}[{partition}]"] = max(0, highwater - committed)
                self.metrics.set(
                    "sentencify_consumer_lag_records", lags[f"{topic}[{partition}]"], topic=topic, partition=partition
                )
        self.status.maybe_publish(lags, self._summary(), force=final)

    def lag(self) -> int:
        return int(self.metrics.total("sentencify_consumer_lag_records"))

    def _idle_done(self) -> bool:
        if self.until_idle_s is None or not self._assigned or self._last_activity is None or self._paused:
            return False
        if not self._w.idle() or self._w.tracker.committable(self._assigned):
            return False
        last = max(self._last_activity, self._w.last_progress)  # idleness counts from the last progress too
        return time.monotonic() - last >= self.until_idle_s

    def _summary(self) -> dict[str, int]:
        return {
            "stored": int(self.metrics.sum_where("sentencify_consumer_records_total", outcome="stored")),
            "duplicates": int(self.metrics.sum_where("sentencify_consumer_records_total", outcome="duplicate")),
            "dead_letters": int(self.metrics.total("sentencify_consumer_dead_letters_total")),
        }

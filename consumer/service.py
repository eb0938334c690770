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
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, KafkaTimeoutError, NoOffsetForPartitionError, OffsetOutOfRangeError
from kafka.structs import OffsetAndMetadata
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from consumer.batch import Batcher
from consumer.broker import BrokerHealth
from consumer.dead_letter import DEAD_LETTERS, BadRatioAlarm, dead_letter_doc, note_dead_letter
from consumer.gapbook import GapBook
from consumer.gaps import PartitionProbe, decide
from consumer.inflight import InFlightWrites
from consumer.lag import LagMonitor
from consumer.metrics import Metrics, MetricsServer
from consumer.offsets import TP, OffsetTracker
from consumer.records import BadRecord, Item, Position
from consumer.route import Router
from consumer.status import StatusPublisher
from consumer.validate import Validator, to_document
from consumer.write import MongoWriter
from consumer.writepath import WritePath
from sentencify import mongo
from sentencify.erasure.keys import erasure_key_or_none
from sentencify.erasure.suppression import SuppressionList
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
LAG_REFRESH_S = 2.0
FETCH_MAX_BYTES = 16 * 1024 * 1024
# A buffered record is held twice: its bytes as received (kept for its dead letter) and its decoded
# document, which takes 1.3 (500 KB text and float records) to 3.7 (the simulator's records, with
# 384-float embeddings) times those bytes, measured with tracemalloc. MAX_BUFFERED_BYTES bounds the
# whole: the records' bytes times HELD_PER_BYTE.
HELD_PER_BYTE = 4.7
NO_ASSIGNMENT_LIMIT_S = 120.0
# Every broker call is bounded: a commit, the lag probe's offset requests and the final close wait
# at most BROKER_TIMEOUT_S, and any request a silent broker never answers fails after
# REQUEST_TIMEOUT_MS (Kafka's own default; kafka-python's 305 s would hold a dead connection).
BROKER_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_MS = 30_000
CHECK_ATTEMPTS = 3  # start-offset checks the broker does not answer before starting without one
MONGO_SILENT_S = 10.0  # writes in flight and none finished for this long: /healthz says MongoDB is not answering


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: IngestService) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.service._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
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
        self.broker = BrokerHealth()
        self.path: WritePath | None = None
        self._mongo = mongo_client
        self._metrics_port = settings.metrics_port if metrics_port is None else metrics_port
        self._install_signals = install_signal_handlers
        self._stop = threading.Event()
        self._stop_asked_at: float | None = None  # monotonic; the shutdown budget counts from here
        self._consumer: KafkaConsumer | None = None
        self._connect_at = 0.0  # monotonic; next attempt to make the Kafka consumer
        self._connect_backoff = BACKOFF_FIRST_S
        self._mongo_check = _MongoCheck()
        self._write_failed_at: float | None = None  # monotonic; MongoDB refused a write and none succeeded since
        self._writes_busy_since: float | None = None  # monotonic; writes in flight without a break since
        self._commit_at = 0.0  # monotonic; no commit before (backoff after a failed one)
        self._deadline: float | None = None  # monotonic; set when shutdown begins
        self._paused = False
        self._assigned: set[tuple[str, int]] = set()
        self._unchecked: set[tuple[str, int]] = set()  # assigned, start offset not decided yet (paused meanwhile)
        self._check_at = 0.0  # monotonic; no new check before (backoff after a failed one)
        self._check_failures = 0  # checks in a row the broker did not answer
        self._probe: PartitionProbe | None = None
        self.gaps: GapBook | None = None
        self._last_activity: float | None = None  # monotonic; set on assignment, every record and every write
        self._last_lag = 0.0
        self._record_bytes = 1024.0  # running mean of value sizes: how many records a poll may take
        self.metrics_server: MetricsServer | None = None
        self.status = StatusPublisher(settings.redis_url if publish_status else None, self.group_id)
        self.lag_monitor = LagMonitor(
            settings,
            self.metrics,
            self.status,
            self.broker,
            self._summary,
            every_s=LAG_REFRESH_S,
            timeout_s=2 * BROKER_TIMEOUT_S,  # its own thread: waiting longer holds nothing up
            frame_bytes=FETCH_MAX_BYTES * 2,
        )

    @property
    def _w(self) -> WritePath:
        assert self.path is not None, "the write path exists once run() has started"
        return self.path

    @property
    def _kafka(self) -> KafkaConsumer:
        assert self._consumer is not None, "the Kafka consumer exists once connected"
        return self._consumer

    # -- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to flush, commit and exit (what SIGTERM/SIGINT do); it exits within SHUTDOWN_TIMEOUT_S."""
        self._stop_asked_at = self._stop_asked_at or time.monotonic()
        self._stop.set()

    def run(self) -> int:
        if self._install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        if self._metrics_port >= 0:
            host = self.settings.metrics_host
            self.metrics_server = MetricsServer(self.metrics, self._metrics_port, host).start()
            log.info("metrics", extra=kv(url=f"http://{host}:{self.metrics_server.port}/metrics"))
        own_mongo = self._mongo is None
        client = self._mongo or mongo.client(
            self.settings.mongo_uri, app_name="sentencify-consumer", socket_timeout_s=mongo.WRITE_TIMEOUT_S
        )
        db = client[self.settings.mongo_db]
        writes = InFlightWrites(
            MongoWriter(db, suppression=SuppressionList(db, erasure_key_or_none(self.settings))),
            self.settings.write_concurrency,
            BACKOFF_FIRST_S,
            BACKOFF_MAX_S,
        )
        batcher = Batcher(self.settings.batch_size, self.settings.flush_interval_ms / 1000)
        self.path = WritePath(batcher, writes, OffsetTracker(), self.metrics, self.settings.dead_letter_prefix_bytes)
        self._mongo_check.start(db)
        self.gaps = GapBook(db, self.metrics).start()
        self.broker.install()
        self.lag_monitor.start()
        try:
            return self._loop()
        finally:
            self.lag_monitor.stop(final=self._consumer is not None)  # the lag it leaves behind stays on the dashboard
            if writes.idle():  # a write MongoDB never answers must not hold the exit (its records are re-read)
                writes.close()
            if self._consumer is not None:
                self._close_consumer()
            if self._probe is not None:
                self._probe.close()
            self.gaps.stop()
            self.broker.uninstall()
            if own_mongo:
                client.close()
            if self.metrics_server:
                self.metrics_server.stop()
            self.status.close()

    def _connect(self) -> bool:
        """Make the Kafka consumer; while no broker answers, retry with backoff (degraded, not stalled)."""
        if time.monotonic() < self._connect_at:
            self._stop.wait(min(MAX_POLL_WAIT_S, self._connect_at - time.monotonic()))
            return False
        try:
            self._consumer = self._make_consumer()
        except KafkaError as exc:  # NoBrokersAvailable: unreachable, or it refused our login or TLS
            self.broker.failed(f"connect: {type(exc).__name__}: {exc}")
            log.warning("Kafka not reachable, retrying", extra=kv(error=str(exc)[:200], retry_in_s=self._connect_backoff))
            self._connect_at = time.monotonic() + self._connect_backoff
            self._connect_backoff = min(self._connect_backoff * 2, BACKOFF_MAX_S)
            return False
        self.broker.ok()
        self._backpressure()  # MongoDB still away at start: paused before the first fetch
        return True

    def _make_consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
            group_id=self.group_id,
            client_id=f"sentencify-ingest-{self.group_id}",
            enable_auto_commit=False,
            # Never reset by itself (kafka-python's "earliest" moves past deleted records silently, at INFO):
            # every start offset is decided by _check_positions, which records what was lost (consumer/gaps.py).
            auto_offset_reset="none",
            # A transactional producer's aborted records are never ingested (the local broker has no
            # transactions; there this only changes the fetch request).
            isolation_level="read_committed",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            max_poll_records=MAX_POLL_RECORDS,
            # Records above MAX_RECORD_BYTES must still be fetched, to be dead-lettered.
            max_partition_fetch_bytes=max(1024 * 1024, self.settings.max_record_bytes * 2),
            # A fetch response is held until its records are handed out: a quarter of the memory bound at most.
            fetch_max_bytes=min(FETCH_MAX_BYTES, max(1024 * 1024, self.settings.max_buffered_bytes // 4)),
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

    def _close_consumer(self) -> None:
        left = self._deadline - time.monotonic() if self._deadline else BROKER_TIMEOUT_S
        try:  # leaving the group is one request: bounded like every other broker call
            self._kafka.close(autocommit=False, timeout_ms=int(1000 * min(BROKER_TIMEOUT_S, max(0.2, left))))
        except KafkaError as exc:
            log.warning("Kafka consumer not closed cleanly", extra=kv(error=str(exc)[:200]))

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> int:
        started = time.monotonic()
        while not self._stop.is_set():
            self.metrics.beat()
            if self.until_idle_s and not self._assigned and time.monotonic() - started > NO_ASSIGNMENT_LIMIT_S:
                log.error("no partitions assigned: is the broker up and are the topics created? (`sentencify stack up`)")
                return EXIT_NO_ASSIGNMENT
            if self._consumer is None and not self._connect():
                self._report_health()
                continue
            if self._unchecked and time.monotonic() >= self._check_at:
                self._check_positions()
            for batch in self._poll().values():
                for msg in batch:
                    self._handle(msg)
            self._w.flush_due()
            self._collect()
            self._commit()
            self._report()
            if self._idle_done():
                log.info("idle, exiting", extra=kv(idle_s=self.until_idle_s, **self._summary()))
                break
        self._shutdown((self._stop_asked_at or time.monotonic()) + self.settings.shutdown_timeout_s)
        log.info("stopped", extra=kv(**self._summary()))
        return EXIT_OK

    def _shutdown(self, deadline: float) -> None:
        """Write what is buffered and commit it, all before `deadline` (SHUTDOWN_TIMEOUT_S from the signal):
        the writes get the time less what one commit and the group leave may take; what is left
        unwritten or uncommitted is read again after the restart."""
        self._deadline = deadline
        reserve = min(2 * BROKER_TIMEOUT_S, self.settings.shutdown_timeout_s / 3)
        self._w.drain(deadline - reserve)
        if self._consumer is not None:
            self._commit(timeout_s=max(0.1, (deadline - time.monotonic()) / 2), force=True)
            self.lag_monitor.update(*self._positions())

    def _poll(self) -> dict:
        """One poll, sized so the records it returns fit in the memory bound; a broker-side failure is
        logged and retried (the partitions' positions do not move, so nothing is skipped)."""
        room = max(0, self.settings.max_buffered_bytes - self._held())
        max_records = int(min(MAX_POLL_RECORDS, max(1, room // (self._record_bytes * HELD_PER_BYTE))))
        try:
            records = self._kafka.poll(timeout_ms=int(self._poll_wait() * 1000), max_records=max_records)
        except OffsetOutOfRangeError as exc:  # the broker deleted what comes next (or the topic was re-created)
            out_of_range = {(tp.topic, tp.partition): offset for tp, offset in dict(exc.args[0]).items()}
            log.warning("fetch offset out of range", extra=kv(partitions={f"{t}[{p}]": o for (t, p), o in out_of_range.items()}))
            self._unchecked |= set(out_of_range) & self._assigned
            self._check_positions(fetch_offsets=out_of_range)
            return {}
        except NoOffsetForPartitionError as exc:  # a partition whose start offset is not decided yet
            self._unchecked |= {(tp.topic, tp.partition) for tp in exc.args[0]} & self._assigned
            if time.monotonic() >= self._check_at:
                self._check_positions()
            else:  # the last check failed: its backoff, not a busy loop
                self._stop.wait(min(MAX_POLL_WAIT_S, self._check_at - time.monotonic()))
            return {}
        except KafkaError as exc:
            log.error("fetch failed, retrying", extra=kv(error=f"{type(exc).__name__}: {exc}"[:300]))
            self.broker.failed(f"fetch: {type(exc).__name__}: {exc}")
            self._stop.wait(BACKOFF_FIRST_S)
            return {}
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

    def _handle(self, msg: Any) -> None:
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

    def _dead_letter(self, msg: Any, position: Position, err: BadRecord) -> dict:
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
        """Fetching pauses while MongoDB is not taking writes or the buffer is over either bound; resumes below half."""
        path, s = self._w, self.settings
        down = self._mongo_down()
        if down:
            self.metrics.degraded["mongodb"] = down
            self._pause(down)
            return
        self.metrics.degraded.pop("mongodb", None)
        if path.records() >= s.max_buffered_records or self._held() >= s.max_buffered_bytes:
            self._pause("buffer full")
        elif self._paused and path.records() < s.max_buffered_records // 2 and self._held() < s.max_buffered_bytes // 2:
            self._resume()

    def _held(self) -> float:
        """Memory the buffered records take, estimated: their bytes as received times HELD_PER_BYTE."""
        return self._w.bytes() * HELD_PER_BYTE

    def _mongo_down(self) -> str | None:
        """Why MongoDB cannot take writes now, or None. An outage lasts until a write succeeds again:
        a retry probe in flight is not a recovery."""
        waiting = self._mongo_check.waiting()
        if waiting:
            return f"waiting for MongoDB at start ({waiting}); fetching paused"
        if self._w.failing:
            self._write_failed_at = self._write_failed_at or time.monotonic()
        elif self._write_failed_at is not None and self._w.last_progress > self._write_failed_at:
            self._write_failed_at = None
        if self._write_failed_at is not None:
            return "MongoDB not taking writes; retrying with backoff, fetching paused"
        now = time.monotonic()
        self._writes_busy_since = None if self._w.writes.idle() else (self._writes_busy_since or now)
        if self._writes_busy_since is not None:
            silent = now - max(self._writes_busy_since, self._w.last_progress)
            if silent > MONGO_SILENT_S:  # a write is bounded by a timeout of its own; say so before it fires
                return f"MongoDB not answering: no write finished for {silent:.0f}s"
        return None

    # -- offsets -------------------------------------------------------------------------------

    def _commit(self, only: Any = None, timeout_s: float = BROKER_TIMEOUT_S, force: bool = False) -> None:
        """Commit what is stored, waiting at most `timeout_s`; a failure is retried later (the records
        stay uncommitted and are read again after a restart, as no-ops)."""
        offsets = self._w.tracker.committable(self._assigned if only is None else only)
        if self.gaps is not None and offsets:  # not past a gap MongoDB has not recorded yet (found again after a restart)
            held = self.gaps.pending_partitions()
            offsets = {tp: o for tp, o in offsets.items() if tp not in held}
        if not offsets or self._consumer is None or (time.monotonic() < self._commit_at and not force):
            return
        try:
            self._kafka.commit(
                {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()},
                timeout_ms=int(timeout_s * 1000),
            )
        except KafkaError as exc:  # the broker away (KafkaTimeoutError), or a rebalance in flight
            log.warning("commit failed", extra=kv(error=f"{type(exc).__name__}: {exc}"[:300]))
            self.broker.failed(f"commit: {type(exc).__name__}: {exc}")
            self._commit_at = time.monotonic() + BACKOFF_FIRST_S * 2
            return
        self.broker.ok()
        self._w.tracker.mark_committed(offsets)
        if self.gaps is not None:
            ends = {tp: self._kafka.highwater(TopicPartition(*tp)) or 0 for tp in offsets}
            self.gaps.remember(offsets, ends)
        self.metrics.inc("sentencify_consumer_commits_total")

    def _on_assigned(self, assigned: Any) -> None:
        self.broker.ok()  # a group join is a broker answering
        self._assigned = {(tp.topic, tp.partition) for tp in assigned}
        self._last_activity = time.monotonic()
        self.metrics.set("sentencify_consumer_assigned_partitions", len(self._assigned))
        log.info("partitions assigned", extra=kv(partitions=sorted(f"{t}[{p}]" for t, p in self._assigned)))
        # Every assigned partition's start is decided here (the group's offset checked against what
        # the broker still has), before its first fetch; paused until then.
        self._unchecked = set(self._assigned)
        self._kafka.pause(*assigned)
        self._check_positions()

    def _on_revoked(self, revoked: Any) -> None:
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self._w.drain(time.monotonic() + self.settings.shutdown_timeout_s)
        self._commit(only=gone, force=True)
        dropped = self._w.drop(gone)
        for tp in gone & self.alarm.alarms:
            self.metrics.degraded.pop(f"producer:{tp[0]}[{tp[1]}]", None)
        self.alarm.forget(gone)
        self._assigned -= gone
        self._unchecked -= gone
        log.info("partitions revoked", extra=kv(count=len(gone), dropped_unwritten=dropped))

    # -- where each partition starts: nothing that left Kafka unread goes unnoticed ---------------

    def _check_positions(self, fetch_offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Decide where each unchecked partition starts (consumer/gaps.py `decide`), record the gaps
        found, seek, and resume it. `fetch_offsets`: partitions whose fetch the broker answered out
        of range, at these offsets. A broker failure leaves them paused and unchecked, retried after
        a backoff. A partition with no committed offset starts at its first offset whatever MongoDB
        says, but what was lost before it needs the consumer's memory there (a re-created topic):
        while MongoDB cannot answer it is positioned there (so its lag counts) and stays paused."""
        todo = sorted(self._unchecked & self._assigned)
        if not todo or self.gaps is None:
            return
        try:
            # A slow broker (the local one under load) can take seconds per request: as long as the
            # lag probe allows. The probe and its connections are kept across attempts.
            self._probe = self._probe or PartitionProbe(
                self.settings, self.group_id, timeout_s=2 * BROKER_TIMEOUT_S, frame_bytes=FETCH_MAX_BYTES * 2
            )
            states = self._probe.read(todo)
        except KafkaError as exc:
            log.warning("start offsets not checked yet, retrying", extra=kv(error=f"{type(exc).__name__}: {exc}"[:300]))
            self.broker.failed(f"start offsets: {type(exc).__name__}: {exc}")
            if self._probe is not None and not isinstance(exc, KafkaTimeoutError):
                self._probe.close()
                self._probe = None
            self._check_failures += 1
            if self._check_failures >= CHECK_ATTEMPTS and self._unchecked_fallback(todo):
                return
            self._check_at = time.monotonic() + BACKOFF_FIRST_S * 2
            self._kafka.pause(*(TopicPartition(*tp) for tp in todo))
            return
        self._check_failures = 0
        positions = {tp: (fetch_offsets or {}).get(tp, states[tp].committed) for tp in todo}
        unknown = [tp for tp in todo if positions[tp] is None]
        memory: dict | None = {}
        if unknown:
            try:  # not while MongoDB is still awaited at start: that would hold the loop for its timeout
                memory = None if self._mongo_check.waiting() else self.gaps.remembered(unknown)
            except PyMongoError as exc:
                log.warning("start offsets: MongoDB not answering, retrying", extra=kv(error=str(exc)[:200]))
                memory = None
        moved: dict[str, str] = {}  # partition -> "committed -> start", where they differ
        for tp in todo:
            state, position = states[tp], positions[tp]
            if position is None and memory is None:
                self._kafka.seek(TopicPartition(*tp), state.earliest)
                self._kafka.pause(TopicPartition(*tp))
                continue
            decision = decide(
                tp[0], tp[1], position=position, remembered=(memory or {}).get(tp), earliest=state.earliest, end=state.end
            )
            for gap in decision.gaps:
                self.gaps.found(gap, decision.start)
            if position != decision.start:
                moved[f"{tp[0]}[{tp[1]}]"] = f"{position if position is not None else 'none'} -> {decision.start}"
            self._kafka.seek(TopicPartition(*tp), decision.start)
            self._unchecked.discard(tp)
            if not self._paused:
                self._kafka.resume(TopicPartition(*tp))
        if memory is None:  # MongoDB away: ask again in a while (the Kafka part is asked again too)
            self._check_at = time.monotonic() + BACKOFF_FIRST_S * 10
        if moved:
            log.info("start offsets", extra=kv(checked=len(todo), moved=moved))

    def _unchecked_fallback(self, todo: list[tuple[str, int]]) -> bool:
        """The broker answers the group's offsets but not the partitions' first offsets or ends (the
        local broker sometimes leaves ListOffsets unanswered): start where the group committed, or at
        the first offset (kafka-python asks it itself), without the deletion check - said in a
        WARNING. An out-of-range fetch is still caught. False when even the offsets are not answered."""
        try:
            committed = self._probe.committed(todo) if self._probe is not None else None
        except KafkaError:
            committed = None
        if committed is None:
            return False
        log.warning(
            "start offsets not checked against the broker's first offsets (it does not answer); starting at the "
            "committed offsets, or the first offset where none",
            extra=kv(partitions=len(todo)),
        )
        for tp in todo:
            part = TopicPartition(*tp)
            if committed.get(tp) is not None:
                self._kafka.seek(part, committed[tp])
            else:
                self._kafka.seek_to_beginning(part)
            self._unchecked.discard(tp)
            if not self._paused:
                self._kafka.resume(part)
        self._check_failures = 0
        return True

    # -- pause, lag, health, idleness ----------------------------------------------------------

    def _pause(self, why: str) -> None:
        if not self._paused and self._consumer is not None:
            self._kafka.pause(*self._kafka.assignment())
            self._paused = True
            self.metrics.set("sentencify_consumer_paused", 1)
            log.warning("fetching paused", extra=kv(reason=why, buffered=self._w.records(), buffered_bytes=self._w.bytes()))

    def _resume(self) -> None:
        self._kafka.resume(*(tp for tp in self._kafka.paused() if (tp.topic, tp.partition) not in self._unchecked))
        self._paused = False
        self._last_activity = time.monotonic()  # a paused stretch is not idleness: records may be waiting
        self.metrics.set("sentencify_consumer_paused", 0)
        log.info("fetching resumed", extra=kv(buffered=self._w.records()))

    def _report(self) -> None:
        """Gauges every round; every LAG_REFRESH_S, what the lag monitor needs from the consumer."""
        self.metrics.set("sentencify_consumer_buffered_records", self._w.records())
        self.metrics.set("sentencify_consumer_buffered_bytes", self._w.bytes())
        for tp in self.alarm.alarms:
            self.metrics.set("sentencify_consumer_bad_ratio", self.alarm.ratio(tp), topic=tp[0], partition=tp[1])
        self._backpressure()  # also when no record arrived: a recovered MongoDB resumes fetching
        self._report_health()
        now = time.monotonic()
        if now - self._last_lag >= LAG_REFRESH_S / 2:
            self._last_lag = now
            self.lag_monitor.update(*self._positions())

    def _report_health(self) -> None:
        why = self.broker.degraded(self._login())
        if why:
            self.metrics.degraded["broker"] = why
        else:
            self.metrics.degraded.pop("broker", None)

    def _login(self) -> str:
        s = self.settings
        if s.kafka_security_protocol.startswith("SASL_"):
            return f"{s.kafka_security_protocol} {s.kafka_sasl_mechanism} as {s.kafka_sasl_username!r}"
        return s.kafka_security_protocol

    def _positions(self) -> tuple[dict[TP, int], dict[TP, int]]:
        """Per assigned partition: the offset below which every record is stored (the tracker's, or
        where reading starts when nothing was read yet), and the consumer's own high watermark."""
        stored, highwater = {}, {}
        for tp in self._kafka.assignment():
            key = (tp.topic, tp.partition)
            upto = self._w.tracker.position(key)
            if upto is None:
                upto = self._kafka.position(tp, timeout_ms=0)  # never blocks: None until the group's offset is known
            if upto is not None:
                stored[key] = upto
            hw = self._kafka.highwater(tp)
            if hw is not None:
                highwater[key] = hw
        return stored, highwater

    def lag(self) -> int:
        return int(self.metrics.total("sentencify_consumer_lag_records"))

    def _idle_done(self) -> bool:
        if self.until_idle_s is None or not self._assigned or self._last_activity is None or self._paused:
            return False
        if not self._w.idle() or self._w.tracker.committable(self._assigned):
            return False
        last = max(self._last_activity, self._w.last_progress)  # idleness counts from the last progress too
        if time.monotonic() - last < self.until_idle_s:
            return False
        # Quiet is not drained: a slow broker can take longer than the idle time to answer the first
        # fetch after an assignment. Done only once the broker's end offsets show nothing left.
        return self.lag_monitor.caught_up(self._assigned)

    def _summary(self) -> dict[str, int]:
        return {
            "stored": int(self.metrics.sum_where("sentencify_consumer_records_total", outcome="stored")),
            "duplicates": int(self.metrics.sum_where("sentencify_consumer_records_total", outcome="duplicate")),
            "dead_letters": int(self.metrics.total("sentencify_consumer_dead_letters_total")),
            "suppressed": int(self.metrics.sum_where("sentencify_consumer_records_total", outcome="suppressed")),
        }


class _MongoCheck:
    """MongoDB at start: the indexes the later steps read are made once, in a thread of their own
    (a stopped MongoDB takes a server-selection timeout to answer), retried with backoff; until
    then the loop keeps fetching paused and `/healthz` says it is waiting."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error = "not checked yet"

    def start(self, db: Any) -> None:
        threading.Thread(target=self._run, args=(db,), name="mongo-start", daemon=True).start()

    def waiting(self) -> str | None:
        return None if self._done.is_set() else self._error

    def _run(self, db: Any) -> None:
        delay = BACKOFF_FIRST_S
        while True:
            try:
                mongo.ensure_indexes(db)
            except PyMongoError as exc:
                self._error = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.warning("MongoDB not reachable, retrying", extra=kv(error=str(exc)[:200], retry_in_s=delay))
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            self._done.set()
            return

"""Lag: records of each assigned partition not yet stored, true also while fetching is paused.

The consumer's own high watermark comes with its fetch responses, so a paused partition's stops
moving (MongoDB stopped with 19k records waiting showed 18,978, then 3,316, all unwritten). A
group-less probe consumer, in its own thread so that its calls (each bounded by `timeout_s`)
never hold up the loop, asks for each partition's end instead:

1. ListOffsets (latest). Right on Kafka. The local broker (tansu 0.6) answers the base offset of
   the partition's last record batch + 1: 37 records sent in two batches gave end offsets 1 and 1.
2. One fetch at that offset (a response of at most one record batch): it carries every
   partition's high watermark, right on both brokers.

The end used is the largest of these and of the consumer's own high watermark (each is a lower
bound of the current end). Lag = end - the offset below which every record is stored (the
committed offset, or what is committed within a second).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from consumer.broker import BrokerHealth
from consumer.metrics import Metrics
from consumer.offsets import TP
from consumer.status import StatusPublisher
from sentencify.kafka_config import kafka_security
from sentencify.logs import kv
from sentencify.settings import Settings

log = logging.getLogger("sentencify.consumer")

LAG = "sentencify_consumer_lag_records"


class EndOffsets:
    """The end offset (high watermark) of partitions; raises KafkaError when the broker does not answer in time."""

    def __init__(self, settings: Settings, timeout_s: float, frame_bytes: int) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            group_id=None,  # never joins the group, never commits
            client_id="sentencify-lag-probe",
            enable_auto_commit=False,
            request_timeout_ms=int(timeout_s * 1000),
            api_version_auto_timeout_ms=int(timeout_s * 1000),
            # A fetch response then holds at most one record batch (KIP-74), yet every partition's high
            # watermark. kafka-python reads a partition's high watermark when it parses that partition's
            # part of the response, which happens as records are handed out: poll() must take them all.
            max_partition_fetch_bytes=1,
            fetch_max_bytes=1,
            max_poll_records=1_000_000,
            fetch_max_wait_ms=50,
            receive_message_max_bytes=frame_bytes,  # one batch can be as large as the largest record
            **kafka_security(settings),
        )
        self._timeout_ms = int(timeout_s * 1000)
        self._assigned: set[TopicPartition] = set()

    def read(self, partitions: list[TP]) -> dict[TP, int]:
        parts = [TopicPartition(t, p) for t, p in partitions]
        try:
            listed = self._consumer.end_offsets(parts)  # KafkaTimeoutError after timeout_s
        except KeyError:  # kafka-python when a partition is missing from the answer (seen on tansu): fetch only
            listed = {}
        if set(parts) != self._assigned:
            self._consumer.assign(parts)
            self._assigned = set(parts)
        for tp in parts:
            self._consumer.seek(tp, listed.get(tp, self._consumer.highwater(tp) or 0))
        self._consumer.poll(timeout_ms=min(self._timeout_ms, 1000))
        return {(tp.topic, tp.partition): max(listed.get(tp, 0), self._consumer.highwater(tp) or 0) for tp in parts}

    def close(self) -> None:
        self._consumer.close(autocommit=False, timeout_ms=1000)


class LagMonitor:
    """Delivery: none (observation). The loop hands it `update(stored_upto, own_highwater)`; a thread
    refreshes the end offsets every `every_s`, sets the lag gauges and publishes the status."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        status: StatusPublisher,
        health: BrokerHealth,
        summary: Callable[[], dict[str, int]],
        *,
        every_s: float,
        timeout_s: float,
        frame_bytes: int,
    ) -> None:
        self.settings, self.metrics, self.status, self.health, self.summary = settings, metrics, status, health, summary
        self.every_s, self.timeout_s, self.frame_bytes = every_s, timeout_s, frame_bytes
        self._stored: dict[TP, int] = {}
        self._own: dict[TP, int] = {}
        self._ends: dict[TP, int] = {}
        self._shown: set[TP] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-probe", daemon=True)

    def start(self) -> LagMonitor:
        self._thread.start()
        return self

    def update(self, stored_upto: dict[TP, int], own_highwater: dict[TP, int]) -> None:
        """From the loop: per assigned partition, the offset below which all is stored, and the consumer's high watermark."""
        with self._lock:
            self._stored, self._own = dict(stored_upto), dict(own_highwater)

    def lags(self) -> dict[TP, int]:
        with self._lock:
            return {tp: max(0, max(self._ends.get(tp, 0), self._own.get(tp, 0)) - upto) for tp, upto in self._stored.items()}

    def caught_up(self, partitions: set[TP]) -> bool:
        """Every partition was fetched since it was assigned (the consumer knows its high watermark) and
        everything below its end is stored. Independent of the probe: a slow broker delays, never blocks, it."""
        with self._lock:
            return all(
                tp in self._own and tp in self._stored and max(self._ends.get(tp, 0), self._own[tp]) <= self._stored[tp]
                for tp in partitions
            )

    def publish(self, force: bool = False) -> dict[TP, int]:
        lags = self.lags()
        for topic, partition in self._shown - set(lags):
            self.metrics.remove(LAG, topic=topic, partition=partition)
        for (topic, partition), lag in lags.items():
            self.metrics.set(LAG, lag, topic=topic, partition=partition)
        self._shown = set(lags)
        self.status.maybe_publish({f"{t}[{p}]": lag for (t, p), lag in lags.items()}, self.summary(), force=force)
        return lags

    def stop(self, final: bool = True) -> None:
        """Stop the thread (without waiting on a broker call in flight) and publish the last lag known."""
        self._stop.set()
        self._thread.join(timeout=0.5)
        if final:
            self.publish(force=True)

    def _run(self) -> None:
        probe: EndOffsets | None = None
        try:
            while not self._stop.wait(self.every_s):
                with self._lock:
                    partitions = sorted(self._stored)
                if partitions:
                    try:
                        probe = probe or EndOffsets(self.settings, self.timeout_s, self.frame_bytes)
                        ends = probe.read(partitions)
                    except KafkaError as exc:
                        self.health.failed(f"end offsets: {type(exc).__name__}: {exc}")
                        log.debug("end offsets not read", extra=kv(error=str(exc)[:200]))
                    except Exception:  # observation must never take the service down: a new probe next time
                        log.exception("end offsets not read")
                        self._close(probe)
                        probe = None
                    else:
                        self.health.ok()
                        with self._lock:
                            self._ends = ends
                self.publish()
        finally:
            self._close(probe)

    @staticmethod
    def _close(probe: EndOffsets | None) -> None:
        if probe is not None:
            try:
                probe.close()
            except Exception as exc:  # noqa: BLE001 (closing a probe of an unreachable broker)
                log.debug("lag probe not closed cleanly", extra=kv(error=str(exc)[:200]))

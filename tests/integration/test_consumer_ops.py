"""The consumer in operation: broker outages and SIGTERM, lag while paused, every `/healthz` state.

Faults are real: the session's Kafka broker is stopped with SIGSTOP (its memory storage survives),
a private MongoDB is stopped and started, a private broker refuses our login.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pymongo import MongoClient

from sentencify.mongo import WRITE_TIMEOUT_S
from sentencify.simulate import generate
from sentencify.stack.process import free_port, port_open, read_pid, spawn, stop_pid, wait_until
from tests.helpers import (
    ConsumerThread,
    assert_manifest_stored,
    committed_offsets,
    consume_until_idle,
    consumer_process,
    log_events,
    send,
    wait_for,
)


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def kafka_pid(settings) -> int:
    from sentencify import stack

    service = next(s for s in stack.services(settings) if s.name == "kafka")
    pid = read_pid(service.pid_file)
    assert pid, "the test stack's Kafka is not running"
    return pid


class PrivateMongo:
    """A MongoDB this test may stop and start again (same port, same storage)."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}"
        self.argv = [
            str(Path(sys.executable).parent / "secantusd-py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(tmp_path / "mongo"),
            "--log-level",
            "WARNING",
        ]
        self.pid_file, self.log_file = tmp_path / "mongo.pid", tmp_path / "mongo.log"
        self.pid: int | None = None

    def start(self) -> PrivateMongo:
        self.pid = spawn(self.argv, pid_file=self.pid_file, log_file=self.log_file)
        wait_until(
            lambda: MongoClient(self.uri, serverSelectionTimeoutMS=500).admin.command("ping"),
            timeout=60,
            what="test mongodb",
            log_file=self.log_file,
        )
        return self

    def stop(self) -> None:
        if self.pid:
            stop_pid(self.pid)
            self.pid = None


# -- broker outage and SIGTERM -----------------------------------------------------------------


@pytest.mark.parametrize(
    "outage_s",
    [20, pytest.param(120, marks=pytest.mark.slow, id="the issue's 2 minutes")],
)
def test_broker_stopped_mid_stream_sigterm_during_the_outage_exits_in_time_and_nothing_is_lost(
    settings, mongo, tmp_path, outage_s
):
    port = free_port()
    settings = dataclasses.replace(settings, metrics_port=port, shutdown_timeout_s=10)
    records = list(generate(1200, seed=31, anomalies=0.0, embedding_dim=settings.embedding_dim))
    half = len(records) // 2
    manifest = send(settings, records[:half])
    proc = consumer_process(settings, log_path=tmp_path / "consumer.log")
    broker = kafka_pid(settings)
    stopped = False
    try:
        wait_for(lambda: mongo.recommend_log.count_documents({}) > 0, 90, "first writes")
        later = send(settings, records[half:])  # mid-stream: the consumer is still reading when the broker stops
        for collection, ids in later.expected_ids.items():
            manifest.expected_ids.setdefault(collection, set()).update(ids)
        os.kill(broker, signal.SIGSTOP)
        stopped, outage_began = True, time.monotonic()

        _, text = wait_for(
            lambda: (h := healthz(port))[0] == 200 and "Kafka broker not answering" in h[1] and h, 30, "degraded: broker"
        )
        assert text.startswith("degraded:"), text
        time.sleep(max(0.0, outage_s / 2 - (time.monotonic() - outage_began)))
        assert healthz(port)[0] == 200, "a broker outage is degraded, never stalled"

        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(settings.shutdown_timeout_s + 10) == 0
        took = time.monotonic() - began
        print(f"exit {took:.1f}s after SIGTERM, {outage_s}s broker outage (SHUTDOWN_TIMEOUT_S={settings.shutdown_timeout_s})")
        assert took <= settings.shutdown_timeout_s + 2, f"exit took {took:.1f}s during the outage"

        time.sleep(max(0.0, outage_s - (time.monotonic() - outage_began)))
    finally:
        if stopped:
            os.kill(broker, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()

    restart_log = tmp_path / "restart.log"
    again = consumer_process(dataclasses.replace(settings, metrics_port=-1), "--until-idle", "3", log_path=restart_log)
    assert again.wait(240) == 0
    assert_manifest_stored(mongo, manifest)  # every record once: ids are the keys, so "once" is exact
    stored = sum(mongo[c].count_documents({}) for c in manifest.expected_ids)
    assert stored == sum(len(ids) for ids in manifest.expected_ids.values())
    assert sum(committed_offsets(settings).values()) == len(records)
    assert log_events(restart_log, "stopped")[-1]["dead_letters"] == 0


def test_broker_refusing_connections_at_start_is_degraded_then_ingestion_starts(settings, mongo):
    bad = dataclasses.replace(settings, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    runner = ConsumerThread(bad, metrics_port=0).start()
    try:
        port = wait_for(lambda: runner.service.metrics_server and runner.service.metrics_server.port, 30, "metrics")
        status, text = wait_for(lambda: (h := healthz(port))[1].startswith("degraded") and h, 30, "degraded")
        assert status == 200 and "Kafka broker not answering" in text and "NoBrokersAvailable" in text, text
    finally:
        assert runner.stop() == 0


def test_broker_refusing_our_login_is_degraded_not_stalled(settings, tmp_path):
    from sentencify.stack.service import tansu_binary

    kport = free_port()
    argv = [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{kport}"]
    argv += ["--advertised-listener-url", f"tcp://127.0.0.1:{kport}", "--authentication"]
    pid = spawn(argv, pid_file=tmp_path / "tansu.pid", log_file=tmp_path / "tansu.log")
    try:
        wait_until(lambda: port_open(kport), timeout=30, what="tansu with authentication")
        wrong = dataclasses.replace(
            settings,
            kafka_bootstrap_servers=f"127.0.0.1:{kport}",
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="ingest",
            kafka_sasl_password="not-the-password",
        )
        runner = ConsumerThread(wrong, metrics_port=0)
        runner.service.metrics.stall_after_s = 3.0
        runner.start()
        try:
            port = wait_for(lambda: runner.service.metrics_server and runner.service.metrics_server.port, 30, "metrics")
            status, text = wait_for(lambda: "refused our login" in (h := healthz(port))[1] and h, 60, "login refused")
            assert status == 200 and text.startswith("degraded:") and "SCRAM-SHA-512 as 'ingest'" in text, text
            assert "not-the-password" not in text
            time.sleep(2 * runner.service.metrics.stall_after_s)
            status, text = healthz(port)
            assert status == 200 and "refused our login" in text, "a restart cannot fix a login: never 503"
        finally:
            assert runner.stop() == 0
    finally:
        stop_pid(pid)


def test_a_stalled_loop_is_503(settings, mongo):
    import threading

    runner = ConsumerThread(settings, metrics_port=0)
    service = runner.service
    service.metrics.stall_after_s = 2.0
    release = threading.Event()
    real_poll = service._poll

    def poll_that_hangs():  # the loop stuck inside one call, as a deadlock would leave it
        if not release.is_set():
            release.wait(60)
        return real_poll()

    runner.start()
    try:
        port = wait_for(lambda: service.metrics_server and service.metrics_server.port, 30, "metrics")
        wait_for(lambda: healthz(port) == (200, "ok\n"), 60, "ok")
        service._poll = poll_that_hangs
        _, text = wait_for(lambda: (h := healthz(port))[0] == 503 and h, 30, "503")
        assert text.startswith("stalled:"), text
        release.set()
        wait_for(lambda: healthz(port)[0] == 200, 30, "alive again")
    finally:
        release.set()
        assert runner.stop() == 0


# -- MongoDB away: lag and health ----------------------------------------------------------------


def test_mongodb_outage_lag_stays_true_and_health_stays_degraded_through_retry_probes(settings, tmp_path):
    db_server = PrivateMongo(tmp_path).start()
    settings = dataclasses.replace(settings, mongo_uri=db_server.uri, max_buffered_records=2000)
    runner = ConsumerThread(settings, metrics_port=0).start()
    service = runner.service
    try:
        first = list(generate(300, seed=41, anomalies=0.0, embedding_dim=settings.embedding_dim))
        manifest = send(settings, first)
        port = wait_for(lambda: service.metrics_server and service.metrics_server.port, 30, "metrics")
        wait_for(lambda: sum(committed_offsets(settings).values()) == len(first), 90, "first records committed")
        wait_for(lambda: service.lag() == 0 and service.lag_monitor.lags(), 30, "lag 0")

        db_server.stop()
        waiting = list(generate(1000, seed=42, anomalies=0.0, embedding_dim=settings.embedding_dim))
        later = send(settings, waiting)
        for collection, ids in later.expected_ids.items():
            manifest.expected_ids.setdefault(collection, set()).update(ids)
        wait_for(lambda: service.metrics.get("sentencify_consumer_paused") == 1, 60, "fetching to pause")
        wait_for(lambda: service.lag() == len(waiting), 30, f"lag {len(waiting)}")

        # MongoDB is away: writes hang until their timeout (WRITE_TIMEOUT_S), fail, and are retried
        # by one probe at a time (backoff 0.5, 1, 2 s...). Through all of it: degraded, and the same lag.
        wait_for(lambda: healthz(port)[1].startswith("degraded: MongoDB"), 30, "degraded: MongoDB")
        lags, health = set(), set()
        began = time.monotonic()
        while time.monotonic() - began < WRITE_TIMEOUT_S + 15:
            lags.add(service.lag())
            status, text = healthz(port)
            health.add((status, text.split(":")[1].strip() if ":" in text else text.strip()))
            time.sleep(0.1)
        assert lags == {len(waiting)}, f"every record is still unwritten, yet the lag read {sorted(lags)}"
        assert {status for status, _ in health} == {200}
        reasons = {"MongoDB not answering", "MongoDB not taking writes; retrying with backoff, fetching paused"}
        assert {why for _, why in health} <= reasons, health
        assert service.metrics.total("sentencify_consumer_write_errors_total") >= 1, "a retry probe was sent"

        db_server.start()
        wait_for(lambda: sum(committed_offsets(settings).values()) == len(first) + len(waiting), 120, "all committed")
        wait_for(lambda: service.lag() == 0, 30, "lag 0 again")
        wait_for(lambda: healthz(port) == (200, "ok\n"), 30, "ok again")
        assert_manifest_stored(MongoClient(settings.mongo_uri)[settings.mongo_db], manifest)
    finally:
        runner.stop()
        db_server.stop()


def test_mongodb_down_at_start_health_says_waiting_and_lag_counts_every_record(settings, tmp_path):
    db_server = PrivateMongo(tmp_path)  # not started yet
    settings = dataclasses.replace(settings, mongo_uri=db_server.uri)
    records = list(generate(400, seed=43, anomalies=0.0, embedding_dim=settings.embedding_dim))
    manifest = send(settings, records)
    runner = ConsumerThread(settings, until_idle_s=3, metrics_port=0).start()
    service = runner.service
    try:
        port = wait_for(lambda: service.metrics_server and service.metrics_server.port, 30, "metrics")
        wait_for(lambda: service.lag() == len(records), 60, f"lag {len(records)}")
        status, text = healthz(port)
        assert status == 200 and text.startswith("degraded: waiting for MongoDB at start"), text
        time.sleep(3)
        assert service.lag() == len(records) and service.metrics.get("sentencify_consumer_paused") == 1

        db_server.start()
        assert runner.join(120) == 0
        assert_manifest_stored(MongoClient(settings.mongo_uri)[settings.mongo_db], manifest)
        assert service.lag() == 0
    finally:
        runner.service.stop()
        db_server.stop()


def test_lag_is_true_on_the_local_broker_whose_list_offsets_is_wrong(settings, mongo):
    """tansu answers ListOffsets with the last batch's base offset + 1; the lag must not trust it alone."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from consumer.lag import EndOffsets

    topic = settings.topic_prefix + "recommend_log"
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=50)
    for i in range(37):
        producer.send(topic, value=b"{}", partition=i % 2)
    producer.flush()
    producer.close()
    probe = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    listed = probe.end_offsets([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    probe.close()
    ends = EndOffsets(settings, timeout_s=5, frame_bytes=32 * 1024 * 1024)
    try:
        assert ends.read([(topic, 0), (topic, 1)]) == {(topic, 0): 19, (topic, 1): 18}
    finally:
        ends.close()
    # Not an assertion on the broker, a record of why the probe fetches: shown when it changes.
    print("ListOffsets answered", {tp.partition: o for tp, o in listed.items()})

    service = consume_until_idle(settings, idle_s=2, metrics_port=-1)
    assert service.lag() == 0

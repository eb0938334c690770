"""No loss and no double storage under faults: kill -9 loops, SIGTERM mid-stream, MongoDB outages."""

from __future__ import annotations

import dataclasses
import random
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from pymongo import MongoClient

from sentencify.simulate import generate
from sentencify.stack.process import free_port, spawn, stop_pid, wait_until
from tests.factories import encoded
from tests.helpers import (
    ConsumerThread,
    assert_manifest_stored,
    committed_offsets,
    consume_until_idle,
    consumer_process,
    log_events,
    send,
    send_raw,
    stored_ids,
    wait_for,
)

pytestmark = pytest.mark.slow


def _total_stored(db) -> int:
    return sum(db[c].count_documents({}) for c in db.list_collection_names())


def test_kill_9_repeatedly_while_producing_loses_nothing_and_stores_nothing_twice(settings, mongo, tmp_path):
    records = list(generate(4200, seed=21, anomalies=0.05, embedding_dim=settings.embedding_dim))
    assert len(records) >= 20_000
    manifest_box = {}

    def produce_slowly():
        # ~40 s of traffic so the kills land mid-stream.
        chunk = len(records) // 40 + 1
        from sentencify.simulate import Manifest

        total = Manifest()
        for start in range(0, len(records), chunk):
            part = send(settings, records[start : start + chunk])
            for c, ids in part.expected_ids.items():
                total.expected_ids.setdefault(c, set()).update(ids)
            total.dead_letters.update(part.dead_letters)
            time.sleep(1.0)
        manifest_box["m"] = total

    producer = threading.Thread(target=produce_slowly)
    producer.start()
    rng = random.Random(3)
    kills = 0
    log = tmp_path / "consumer.log"
    while producer.is_alive() or kills < 5:
        proc = consumer_process(settings, log_path=log)
        before = _total_stored(mongo)
        # Kill only once this incarnation has written something: a kill before the group join proves nothing.
        wait_for(
            lambda before=before, proc=proc: _total_stored(mongo) > before or proc.poll() is not None, 90, "the consumer to write"
        )
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    producer.join()
    manifest = manifest_box["m"]

    consume_until_idle(settings, idle_s=3, timeout=240)

    assert kills >= 5
    assert_manifest_stored(mongo, manifest)
    reasons = {}
    for letter in mongo.dead_letters.find({}, {"reason": 1}):
        reasons[letter["reason"]] = reasons.get(letter["reason"], 0) + 1
    assert reasons == dict(manifest.dead_letters), "dead_letters must hold exactly the malformed records"
    unknown_topics = {r.topic_suffix for r in records} - set(manifest.expected_ids)
    assert sum(committed_offsets(settings, extra=unknown_topics).values()) == len(records)


def test_sigterm_mid_stream_flushes_partial_batches_commits_and_a_restart_rereads_nothing(settings, mongo, tmp_path):
    port = free_port()
    # Batches that never fill and never age out: only the shutdown can write them.
    settings = dataclasses.replace(settings, batch_size=1000, flush_interval_ms=600_000, metrics_port=port)
    values = [encoded("I") for _ in range(300)] + [encoded("B") for _ in range(200)]
    send_raw(settings, "recommend_log", values[:300])
    send_raw(settings, "editor_run_paraphrasing", values[300:])
    log = tmp_path / "consumer.log"
    proc = consumer_process(settings, log_path=log)

    def buffered() -> bool:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return False
        return "sentencify_consumer_buffered_records 500" in text

    wait_for(buffered, 90, "500 records buffered in partial batches")
    assert _total_stored(mongo) == 0
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert time.monotonic() - began < 10
    assert mongo.recommend_log.count_documents({}) == 300
    assert mongo.editor_run_paraphrasing.count_documents({}) == 200
    assert sum(committed_offsets(settings).values()) == 500

    restart_log = tmp_path / "restart.log"
    again = consumer_process(dataclasses.replace(settings, metrics_port=-1), "--until-idle", "2", log_path=restart_log)
    assert again.wait(120) == 0
    summary = log_events(restart_log, "stopped")[-1]
    assert summary["stored"] == 0 and summary["duplicates"] == 0, summary


def test_mongodb_down_for_20_seconds_mid_stream_loses_nothing(settings, tmp_path):
    # A private MongoDB this test may stop and restart (same port, same on-disk storage).
    port = free_port()
    storage = tmp_path / "mongo"
    argv = [
        str(venv_script("secantusd-py")),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(storage),
        "--log-level",
        "WARNING",
    ]
    pid_file, log_file = tmp_path / "mongo.pid", tmp_path / "mongo.log"

    def start_mongo() -> int:
        pid = spawn(argv, pid_file=pid_file, log_file=log_file)
        wait_until(
            lambda: MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=500).admin.command("ping"),
            timeout=60,
            what="test mongodb",
            log_file=log_file,
        )
        return pid

    pid = start_mongo()
    settings = dataclasses.replace(settings, mongo_uri=f"mongodb://127.0.0.1:{port}", max_buffered_records=2000)
    runner = ConsumerThread(settings, until_idle_s=5).start()
    records = list(generate(1200, seed=8, anomalies=0.0, embedding_dim=settings.embedding_dim))
    half = len(records) // 2
    manifest = send(settings, records[:half])
    db = MongoClient(settings.mongo_uri, tz_aware=True)[settings.mongo_db]
    wait_for(lambda: _total_stored(db) > 0, 60, "first writes")

    stop_pid(pid)
    outage_began = time.monotonic()
    later = send(settings, records[half:])  # traffic keeps coming while MongoDB is away
    for c, ids in later.expected_ids.items():
        manifest.expected_ids.setdefault(c, set()).update(ids)
    wait_for(lambda: runner.service.metrics.get("sentencify_consumer_paused") == 1, 30, "fetching to pause")
    max_buffered = 0
    while time.monotonic() - outage_began < 20:
        max_buffered = max(max_buffered, runner.service.path.batcher.total if runner.service.path else 0)
        time.sleep(0.2)
    # A write to a stopped MongoDB fails only at its own timeout (mongo.WRITE_TIMEOUT_S); meanwhile health says so.
    assert "mongodb" in runner.service.metrics.degraded
    # Bounded memory: at most the limit plus one poll's worth of records.
    assert max_buffered <= settings.max_buffered_records + 500

    pid = start_mongo()
    try:
        assert runner.join(240) == 0
        assert_manifest_stored(db, manifest)
        assert sum(committed_offsets(settings).values()) == len(records)
    finally:
        stop_pid(pid)


def venv_script(name: str) -> Path:
    return Path(sys.executable).parent / name


def test_restart_after_clean_exit_rereads_nothing(settings, mongo):
    send_raw(settings, "recommend_log", [encoded("I") for _ in range(120)])
    first = consume_until_idle(settings)
    assert first.metrics.sum_where("sentencify_consumer_records_total", outcome="stored") == 120
    second = consume_until_idle(settings)
    assert second.metrics.total("sentencify_consumer_records_total") == 0
    assert len(stored_ids(mongo, "recommend_log")) == 120

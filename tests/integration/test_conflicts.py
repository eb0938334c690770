"""Conflicts and dead-letter identity (events.md "Bad input"), against the real broker and MongoDB server.

- One key, different content, one partition, two writer threads: the lower offset is stored every
  time, the other is dead-lettered as `conflict` with its bytes; an identical redelivery is a no-op.
- A later offset stored first by another consumer (before a rebalance) is displaced by the earlier
  one and dead-lettered when it is read again.
- Two consumers, MongoDB stalled (SIGSTOP), one consumer stopped with writes in flight (a
  rebalance), MongoDB resumed (SIGCONT): every record stored once.
- A topic re-created or moved to another cluster (offsets from 0 again) with new bad records:
  old and new dead letters are all kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import MongoClient

from consumer.dead_letter import dead_letter_doc
from consumer.records import BadRecord, Position
from consumer.route import Router
from consumer.validate import Validator, to_document
from sentencify import mongo as mongo_module
from sentencify.simulate import generate
from sentencify.stack.process import free_port, spawn, stop_pid, wait_until
from tests.factories import record
from tests.helpers import (
    ConsumerThread,
    assert_manifest_stored,
    committed_offsets,
    consume_until_idle,
    send,
    send_raw,
    wait_for,
)
from tests.integration.test_faults import venv_script

pytestmark = pytest.mark.slow


def test_the_lower_offset_wins_a_conflict_under_two_writer_threads_every_time(settings, mongo):
    # One record per batch and two writers: without ordering, the later version often finishes first.
    settings = dataclasses.replace(settings, batch_size=1, write_concurrency=2, flush_interval_ms=20)
    first, second = [], []
    for n in range(60):
        rec = record("D", correction_history_id=f"d-{n}", selected_index=0)
        first.append(json.dumps(rec).encode())
        second.append(json.dumps({**rec, "selected_index": 1}).encode())
    same = [json.dumps(record("D", correction_history_id=f"same-{n}")).encode() for n in range(10)]
    values = [v for pair in zip(first, second, strict=True) for v in pair] + [v for v in same for _ in (0, 1)]
    send_raw(settings, "correction_history", values, key=b"one-partition")

    consume_until_idle(settings)

    stored = {d["_id"]: d for d in mongo.correction_history.find()}
    assert len(stored) == 70
    assert all(stored[f"d-{n}"]["selected_index"] == 0 for n in range(60)), "a later offset won a conflict"
    offsets = {d["_id"]: d["_kafka"]["offset"] for d in stored.values()}
    letters = list(mongo.dead_letters.find())
    assert sorted(bytes(d["raw"]) for d in letters) == sorted(second)  # identical redeliveries are no-ops
    for letter in letters:
        key = json.loads(letter["raw"])["correction_history_id"]
        assert letter["reason"] == "conflict" and key in letter["error"] and "selected_index" in letter["error"]
        assert bytes(letter["key"]) == b"one-partition" and letter["offset"] == offsets[key] + 1
    assert sum(committed_offsets(settings).values()) == len(values)

    # Replayable: once the stored record is removed, the conflicting one is stored from its letter.
    from sentencify.produce import producer
    from sentencify.replay import replay_dead_letters
    from sentencify.schemas import topics

    mongo.correction_history.delete_one({"_id": "d-0"})
    kafka = producer(settings)
    try:
        done = replay_dead_letters(mongo, kafka, known_topics=set(topics(settings.topic_prefix)), reason="conflict")
    finally:
        kafka.close()
    assert done.sent >= 1
    consume_until_idle(settings)
    assert mongo.correction_history.find_one({"_id": "d-0"})["selected_index"] == 1
    assert mongo.correction_history.count_documents({}) == 70


@pytest.fixture
def stoppable_mongo(tmp_path):
    """A private MongoDB-protocol server this test may SIGSTOP and SIGCONT: yields (uri, pid)."""
    port = free_port()
    argv = [str(venv_script("secantusd-py")), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--storage-path", str(tmp_path / "mongo"), "--log-level", "WARNING"]
    log_file = tmp_path / "mongo.log"
    pid = spawn(argv, pid_file=tmp_path / "mongo.pid", log_file=log_file)
    uri = f"mongodb://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping"),
            timeout=60,
            what="test mongodb",
            log_file=log_file,
        )
        yield uri, pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        stop_pid(pid)


def test_a_rebalance_with_writes_in_flight_to_a_stalled_mongodb_stores_every_record_once(settings, stoppable_mongo, monkeypatch):
    uri, pid = stoppable_mongo
    monkeypatch.setattr(mongo_module, "WRITE_TIMEOUT_S", 3)  # each write gives up after 3 s (not 60)
    settings = dataclasses.replace(settings, mongo_uri=uri, shutdown_timeout_s=3, batch_size=20)
    db = MongoClient(uri, tz_aware=True)[settings.mongo_db]
    records = list(generate(300, seed=23, anomalies=0.0, embedding_dim=settings.embedding_dim))
    half = len(records) // 2
    first = ConsumerThread(settings).start()
    second = ConsumerThread(settings, until_idle_s=5).start()
    manifest = send(settings, records[:half])
    wait_for(lambda: sum(db[c].count_documents({}) for c in db.list_collection_names()) > 0, 60, "first writes")

    os.kill(pid, signal.SIGSTOP)
    try:
        later = send(settings, records[half:])
        for collection, ids in later.expected_ids.items():
            manifest.expected_ids.setdefault(collection, set()).update(ids)
        wait_for(lambda: first.service.path is not None and first.service.path.writes.records() > 0, 30, "writes in flight")
        time.sleep(4)  # past the write timeout: the stalled server holds requests it will apply later
        assert first.stop() == 0  # a rebalance: its partitions go to the other consumer, unwritten
    finally:
        os.kill(pid, signal.SIGCONT)

    assert second.join(240) == 0
    consume_until_idle(settings, idle_s=3)  # whatever the second one left (it exits once idle)
    assert_manifest_stored(db, manifest)
    total = sum(db[c].count_documents({}) for c in manifest.expected_ids)
    assert total == sum(len(ids) for ids in manifest.expected_ids.values())  # once each
    assert db.dead_letters.count_documents({}) == 0
    assert sum(committed_offsets(settings).values()) == len(records)


def test_dead_letters_survive_a_topic_recreated_or_moved_to_another_cluster(settings, mongo):
    """Offsets start again from 0 in a re-created topic or another cluster. The local broker cannot
    delete topics (it drops the connection), so the old incarnation's letters are written as the
    consumer wrote them then: same topic, partitions and offsets, same bytes, an earlier timestamp."""
    topic = settings.topic_prefix + "recommend_log"
    bad = [b'{"broken": ' + str(n).encode() for n in range(3)]
    send_raw(settings, "recommend_log", bad, key=b"k")
    consume_until_idle(settings)
    new = list(mongo.dead_letters.find())
    assert len(new) == 3
    old = [
        dead_letter_doc(
            Position(topic, d["partition"], d["offset"], d["kafka_timestamp"] - 86_400_000),
            b"k",
            bytes(d["raw"]),
            BadRecord("not_json", "value is not JSON"),
            4096,
            datetime.now(UTC) - timedelta(days=1),
        )
        for d in new
    ]
    mongo.dead_letters.delete_many({})
    mongo.dead_letters.insert_many(old)  # what an earlier incarnation of the topic left

    consume_until_idle(dataclasses.replace(settings, consumer_group=f"moved-{uuid.uuid4().hex[:6]}"))

    letters = list(mongo.dead_letters.find())
    assert len(letters) == 6 and {d["_id"] for d in old} < {d["_id"] for d in letters}
    assert sorted(bytes(d["raw"]) for d in letters) == sorted(bad * 2)
    consume_until_idle(dataclasses.replace(settings, consumer_group=f"again-{uuid.uuid4().hex[:6]}"))
    assert mongo.dead_letters.count_documents({}) == 6  # the same records read again: each letter once


def test_a_later_offset_stored_first_by_another_consumer_is_displaced_and_dead_lettered(settings, mongo):
    """Before a rebalance, another consumer wrote the later record of a key but not the earlier one
    (and so committed neither). The new owner stores the earlier one in its place, then reads the
    later one again and dead-letters it as a conflict: the lowest offset wins, nothing is lost."""
    from sentencify.produce import producer

    topic = settings.topic_prefix + "correction_history"
    rec = record("D", correction_history_id="d-race", selected_index=0)
    early, late = json.dumps(rec).encode(), json.dumps({**rec, "selected_index": 1}).encode()
    kafka = producer(settings)
    try:
        sent = [kafka.send(topic, key=b"race", value=v).get(timeout=30) for v in (early, late)]
    finally:
        kafka.close()
    assert sent[0].partition == sent[1].partition and sent[1].offset == sent[0].offset + 1
    _, doc = to_document(
        Router(settings.topic_prefix),
        Validator(settings.embedding_dim),
        settings.max_record_bytes,
        Position(topic, sent[1].partition, sent[1].offset),
        late,
    )
    mongo.correction_history.insert_one({**doc, "ingested_at": datetime.now(UTC)})  # the other consumer's write

    consume_until_idle(settings)

    stored = mongo.correction_history.find_one({"_id": "d-race"})
    assert stored["selected_index"] == 0 and stored["_kafka"]["offset"] == sent[0].offset
    letter = mongo.dead_letters.find_one()
    assert letter["reason"] == "conflict" and bytes(letter["raw"]) == late and letter["offset"] == sent[1].offset
    assert mongo.dead_letters.count_documents({}) == 1
    assert sum(committed_offsets(settings).values()) == 2

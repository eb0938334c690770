"""No record can stop ingestion: hostile records among good ones, compressed batches, broken producers, replay.

Real broker (tansu) and real MongoDB-protocol server. Where the local server is more lenient than
MongoDB (nesting), the consumer's own check is what is tested.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from datetime import UTC, datetime

import pytest
from kafka import KafkaConsumer, KafkaProducer

from consumer.batch import Batcher
from consumer.inflight import InFlightWrites
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker
from consumer.records import Item, Position
from consumer.write import MongoWriter
from consumer.writepath import WritePath
from sentencify.produce import producer
from sentencify.replay import replay_dead_letters
from sentencify.schemas import BY_CODE, topics
from tests.factories import encoded, record
from tests.helpers import ConsumerThread, committed_offsets, consume_until_idle, send_raw, stored_ids, wait_for


def deep(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"x": value}
    return value


def good_records() -> dict[str, list[bytes]]:
    """Two good records of every type."""
    return {BY_CODE[c].name: [encoded(c), encoded(c)] for c in "ABCDEFI"}


# (collection, value, expected reason, words the error must contain)
HOSTILE = [
    ("editor_selected_paraphrasing", encoded("C", created_at="0001-01-01T00:00:00+09:00"), "schema", "created_at"),
    ("editor_selected_paraphrasing", encoded("C", created_at="9999-12-31T23:30:00-01:00"), "schema", "created_at"),
    ("recommend_log", encoded("I", created_at=2**62), "schema", "created_at"),
    ("recommend_log", json.dumps({**record("I"), "counter": 18446744073709551615}).encode(), "unstorable", "counter"),
    ("editor_recommend_options", json.dumps({**record("A"), "bad\u0000name": 1}).encode(), "unstorable", "NUL"),
    ("editor_recommend_options", encoded("A", P_vec={"em\u0000ail": 0.5}), "unstorable", "P_vec"),
    ("context_block", json.dumps({**record("E"), "tree": deep(260)}).encode(), "unstorable", "nesting deeper than 100"),
    ("document_context_cache", b'{"insert_id": "f-x", "doc_id": 1e999}', "not_json", "JSON"),
    ("correction_history", b"\x00\x01\x02 binary junk", "not_json", "JSON"),
    ("recommend_log", b"", "not_json", "JSON"),
]


def test_hostile_records_among_good_ones_drain_in_one_run_and_replay_from_their_original_bytes(settings, mongo):
    good = good_records()
    forged = record("I", insert_id="i-forged")
    forged.update({"_id": "evil", "_kafka": {"topic": "x", "partition": 9, "offset": -1}, "ingested_at": "2000-01-01"})
    good["recommend_log"].append(json.dumps(forged).encode())
    key = b"same-partition"  # good and hostile records interleave on one partition per topic
    for collection, values in good.items():
        send_raw(settings, collection, values[:1], key=key)
    for n, (collection, value, _, _) in enumerate(HOSTILE):
        send_raw(settings, collection, [value], key=key + b"-%d" % n)
    for collection, values in good.items():
        send_raw(settings, collection, values[1:], key=key)

    service = consume_until_idle(settings)

    for collection, values in good.items():
        key_field = next(e.key_field for e in BY_CODE.values() if e.name == collection)
        assert stored_ids(mongo, collection) == {json.loads(v)[key_field] for v in values}, collection
    stored = mongo.recommend_log.find_one({"_id": "i-forged"})
    assert stored["_kafka"]["topic"] == settings.topic_prefix + "recommend_log" and stored["_kafka"]["offset"] >= 0
    assert stored["ingested_at"].year >= 2026
    letters = list(mongo.dead_letters.find().sort("failed_at", 1))
    assert len(letters) == len(HOSTILE)
    for collection, value, reason, words in HOSTILE:
        letter = next(d for d in letters if bytes(d["raw"]) == value and d["topic"].endswith(collection))
        assert letter["reason"] == reason and words in letter["error"], (letter["reason"], letter["error"])
        assert letter["key"] is not None and bytes(letter["key"]).startswith(b"same-partition-")
    total = sum(len(v) for v in good.values()) + len(HOSTILE)
    assert sum(committed_offsets(settings).values()) == total
    assert service.metrics.total("sentencify_consumer_dead_letters_total") == len(HOSTILE)

    # Replay sends each one's original bytes and key back to its own topic (every reason).
    known = set(topics(settings.topic_prefix))
    kafka = producer(settings)
    try:
        done = replay_dead_letters(mongo, kafka, known_topics=known)
    finally:
        kafka.close()
    assert done.sent == len(HOSTILE) and done.truncated == 0
    replayed = read_all(settings, sorted(known), skip=committed_offsets(settings))
    assert sorted((k, v) for k, v in replayed) == sorted((bytes(d["key"]), bytes(d["raw"])) for d in letters)
    assert mongo.dead_letters.count_documents({"replayed_at": {"$exists": True}}) == len(HOSTILE)


def read_all(settings, topic_names: list[str], skip: dict) -> list[tuple[bytes | None, bytes]]:
    """Every record after `skip`'s offsets, as (key, value) bytes."""
    from kafka import TopicPartition

    reader = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False, consumer_timeout_ms=3000)
    parts = [TopicPartition(t, p) for t in topic_names for p in range(settings.topic_partitions)]
    reader.assign(parts)
    for tp in parts:
        reader.seek(tp, skip.get((tp.topic, tp.partition), 0))
    try:
        return [(m.key, m.value) for m in reader]
    finally:
        reader.close()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_consumed(settings, mongo, codec):
    kafka = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, compression_type=codec, linger_ms=50, batch_size=512 * 1024
    )
    expected: dict[str, set[str]] = {}
    try:
        for code in "ABCDEFI":
            et = BY_CODE[code]
            for _ in range(30):
                value = encoded(code)
                expected.setdefault(et.name, set()).add(json.loads(value)[et.key_field])
                kafka.send(settings.topic_prefix + et.name, value=value)
        kafka.flush(30)
    finally:
        kafka.close()

    consume_until_idle(settings)

    for collection, ids in expected.items():
        assert stored_ids(mongo, collection) == ids, f"{codec}: {collection}"
    assert mongo.dead_letters.count_documents({}) == 0


def test_a_broken_producer_raises_the_alarm_and_nothing_stops(settings, mongo):
    settings = dataclasses.replace(settings, dlq_window=20, dlq_max_bad_ratio=0.5)
    bad = [encoded("I", latency_ms=str(i)) for i in range(40)]  # a producer bug: latency as a string
    send_raw(settings, "recommend_log", bad, key=b"broken")
    good = good_records()
    for collection, values in good.items():
        send_raw(settings, collection, values, key=b"fine")

    runner = ConsumerThread(settings, metrics_port=0).start()
    try:
        wait_for(lambda: mongo.dead_letters.count_documents({}) == 40, 60, "every bad record dead-lettered")
        wait_for(lambda: all(mongo[c].count_documents({}) == len(v) for c, v in good.items()), 60, "good records")
        letter = mongo.dead_letters.find_one()
        tp = f"{letter['topic']}[{letter['partition']}]"
        port = runner.service.metrics_server.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as resp:
            health = resp.read().decode()
            assert resp.status == 200  # alive: a restart would not fix the producer, and would rebalance
        assert health.startswith("degraded") and tp in health and "producer looks broken" in health
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        from prometheus_client.parser import text_string_to_metric_families

        samples = {
            (smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for fam in text_string_to_metric_families(metrics)
            for smp in fam.samples
        }
        labels = (("partition", str(letter["partition"])), ("topic", letter["topic"]))
        assert samples[("sentencify_consumer_producer_alarm", labels)] == 1
        assert "sentencify_consumer_bad_ratio{" in metrics
    finally:
        assert runner.stop() == 0
    assert sum(committed_offsets(settings).values()) == 40 + sum(len(v) for v in good.values())
    # Replayable after the fix: every letter holds the record's bytes and key as sent.
    assert sorted(bytes(d["raw"]) for d in mongo.dead_letters.find()) == sorted(bad)
    assert {bytes(d["key"]) for d in mongo.dead_letters.find()} == {b"broken"}


def test_a_document_mongodb_refuses_is_dead_lettered_with_its_bytes_and_the_batch_is_stored(settings, mongo):
    """The write path's last line: what the driver or server refuses becomes a dead letter of the original record."""
    metrics = Metrics()
    writes = InFlightWrites(MongoWriter(mongo), 1, 0.1, 0.5)
    path = WritePath(Batcher(100, 0.05), writes, OffsetTracker(), metrics, 4096)
    topic = settings.topic_prefix + "recommend_log"
    try:
        for offset in range(5):
            doc = {"_id": f"i-{offset}", "n": offset}
            if offset == 2:
                doc["unencodable"] = {1, 2}  # nothing the checks let through, but the driver refuses it
            path.add("recommend_log", Item(doc, Position(topic, 0, offset), b"k%d" % offset, b"raw-%d" % offset))
        deadline = datetime.now(UTC).timestamp() + 30
        while path.tracker.committable() != {(topic, 0): 5} and datetime.now(UTC).timestamp() < deadline:
            path.flush_due()
            path.collect(timeout=0.1)
    finally:
        writes.close()
    assert stored_ids(mongo, "recommend_log") == {"i-0", "i-1", "i-3", "i-4"}
    letter = mongo.dead_letters.find_one()
    assert letter["reason"] == "rejected_by_mongodb" and bytes(letter["raw"]) == b"raw-2" and bytes(letter["key"]) == b"k2"
    assert path.tracker.committable() == {(topic, 0): 5}


def test_ingestion_rules_of_events_md_through_kafka_and_mongodb(settings, mongo):
    """Integer literals past 64 bits, leap seconds, float32 embeddings, NUL in values, lone surrogates."""
    nul = record("A", reco_category_input="email\u0000", user_id="u\u0000\u0000x")
    leap = record("C", created_at="2016-12-31T23:59:60.5+09:00")
    big = json.dumps(record("I")).encode()[:-1] + b', "counter": 18446744073709551616}'
    huge = record("E", embedding_v1=[0.5] * 383 + [3.5e38])
    surrogate = json.dumps(record("A")).encode()[:-1] + b', "note": "\\ud800"}'
    values = {
        "editor_recommend_options": [json.dumps(nul).encode(), surrogate],
        "editor_selected_paraphrasing": [json.dumps(leap).encode()],
        "recommend_log": [big],
        "context_block": [json.dumps(huge).encode()],
    }
    good = good_records()
    for collection, raws in values.items():
        send_raw(settings, collection, good[collection][:1] + raws + good[collection][1:], key=b"k")

    consume_until_idle(settings)

    stored = mongo.editor_recommend_options.find_one({"_id": nul["insert_id"]})
    assert stored["reco_category_input"] == "email\u0000" and stored["user_id"] == "u\u0000\u0000x"
    assert mongo.editor_selected_paraphrasing.find_one({"_id": leap["insert_id"]})["created_at"] == datetime(
        2016, 12, 31, 14, 59, 59, 999000, tzinfo=UTC
    )
    letters = {bytes(d["raw"]): d for d in mongo.dead_letters.find()}
    assert len(letters) == 3
    assert letters[big]["reason"] == "unstorable" and "counter" in letters[big]["error"]
    assert letters[surrogate]["reason"] == "not_json" and "surrogate" in letters[surrogate]["error"]
    embedding = letters[json.dumps(huge).encode()]
    assert embedding["reason"] == "schema" and "embedding_v1" in embedding["error"] and "float32" in embedding["error"]
    for collection in values:
        key_field = next(e.key_field for e in BY_CODE.values() if e.name == collection)
        assert {json.loads(v)[key_field] for v in good[collection]} <= stored_ids(mongo, collection)


def test_replay_rechecks_each_letter_and_by_default_sends_only_what_would_now_be_stored(settings, mongo):
    from consumer.dead_letter import dead_letter_doc
    from consumer.records import BadRecord
    from sentencify.replay import Rules

    topic = settings.topic_prefix + "recommend_log"
    now_good = encoded("I")  # e.g. refused by a rule since relaxed
    still_bad = encoded("I", latency_ms="fast")  # a producer bug: the same bytes fail again
    stored = record("I", insert_id="i-kept")
    mongo.recommend_log.insert_one({**stored, "_id": "i-kept"})
    conflicting = encoded("I", insert_id="i-kept", latency_ms=999.0)
    letters = [(now_good, "schema"), (still_bad, "schema"), (conflicting, "conflict")]
    mongo.dead_letters.insert_many(
        [
            dead_letter_doc(Position(topic, 0, n, 1), b"k", raw, BadRecord(reason, "x"), 4096, datetime.now(UTC))
            for n, (raw, reason) in enumerate(letters)
        ]
    )
    rules = Rules(settings.topic_prefix, settings.embedding_dim, settings.max_record_bytes)
    kafka = producer(settings)
    try:
        dry = replay_dead_letters(mongo, kafka, known_topics={topic}, rules=rules, skip_failing=False, dry_run=True)
        assert dry.sent == 3 and dry.fail_again == {"schema": 1, "conflict": 1}
        done = replay_dead_letters(mongo, kafka, known_topics={topic}, rules=rules, skip_failing=True)
    finally:
        kafka.close()
    assert done.sent == 1 and done.skipped == 2 and done.fail_again == {"schema": 1, "conflict": 1}
    assert [(k, v) for k, v in read_all(settings, [topic], skip={})] == [(b"k", now_good)]
    assert mongo.dead_letters.count_documents({"replayed_at": {"$exists": True}}) == 1

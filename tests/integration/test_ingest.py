"""The consumer against a real Kafka-protocol broker and a real MongoDB-protocol server."""

from __future__ import annotations

import json
import urllib.request

from kafka import KafkaProducer
from pymongo import MongoClient, monitoring

from sentencify.schemas import BY_CODE
from sentencify.simulate import generate
from sentencify.stack.topics import create_topics
from tests.factories import encoded, record
from tests.helpers import (
    ConsumerThread,
    assert_manifest_stored,
    committed_offsets,
    consume_until_idle,
    send,
    send_raw,
    stored_ids,
    wait_for,
)


class InsertSpy(monitoring.CommandListener):
    """Every insert command the consumer sends: (collection, number of documents)."""

    def __init__(self) -> None:
        self.inserts: list[tuple[str, int]] = []

    def started(self, event):
        if event.command_name == "insert":
            self.inserts.append((event.command["insert"], len(event.command["documents"])))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_founding_150_records_arrive_in_two_writes_of_100_and_50(settings, mongo):
    """The roadmap's stand-alone test: 150 messages -> MongoDB receives them in two writes (100, then 50)."""
    values = [encoded("I") for _ in range(150)]
    send_raw(settings, BY_CODE["I"].name, values)

    spy = InsertSpy()
    client = MongoClient(settings.mongo_uri, event_listeners=[spy], tz_aware=True)
    consume_until_idle(settings, mongo_client=client)
    client.close()

    assert spy.inserts == [("recommend_log", 100), ("recommend_log", 50)]
    expected = {json.loads(v)["insert_id"] for v in values}
    assert stored_ids(mongo, "recommend_log") == expected
    doc = mongo.recommend_log.find_one()
    assert doc["ingested_at"].tzinfo is not None
    assert set(doc["_kafka"]) == {"topic", "partition", "offset"}
    assert sum(committed_offsets(settings).values()) == 150


def test_seven_topics_10k_records_counts_exact(settings, mongo):
    records = list(generate(2150, seed=11, anomalies=0.0, embedding_dim=settings.embedding_dim))
    assert len(records) >= 10_000
    manifest = send(settings, records)

    service = consume_until_idle(settings)

    assert_manifest_stored(mongo, manifest)
    assert mongo.dead_letters.count_documents({}) == 0
    stored = service.metrics.sum_where("sentencify_consumer_records_total", outcome="stored")
    assert stored == sum(manifest.stored_counts().values())
    assert service.lag() == 0
    offsets = committed_offsets(settings)
    assert sum(offsets.values()) == len(records)
    # Timestamps became UTC dates; the indexes the later steps join on exist.
    a = mongo.editor_recommend_options.find_one()
    assert a["created_at"].utcoffset().total_seconds() == 0
    assert "recommend_session_id_1" in mongo.editor_recommend_options.index_information()
    assert "context_hash_1" in mongo.editor_recommend_options.index_information()


def test_every_bad_input_class_is_dead_lettered_and_good_records_around_it_are_stored(settings, mongo):
    create_topics(settings, extra=[settings.topic_prefix + "mystery_events"])
    good = [record("I") for _ in range(4)]
    big = json.dumps({**record("I"), "blob": "x" * (settings.max_record_bytes + 1)}).encode()
    bad = {
        b"\xff\xfe not utf8": "not_json",
        b"{not json": "not_json",
        b'["an", "array"]': "not_object",
        json.dumps({k: v for k, v in record("I").items() if k != "latency_ms"}).encode(): "schema",
        encoded("I", latency_ms="fast"): "schema",
        encoded("I", latency_ms=-1): "schema",
        encoded("I", created_at="yesterday"): "schema",
        big: "too_large",
    }
    key = b"one-partition"  # one key: good and bad interleave on one partition, in this order
    values = [
        json.dumps(good[0]).encode(),
        *list(bad)[:4],
        json.dumps(good[1]).encode(),
        *list(bad)[4:],
        json.dumps(good[2]).encode(),
        json.dumps(good[2]).encode(),
    ]  # the last one: a redelivery
    send_raw(settings, "recommend_log", values, key=key)
    kafka = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=4 * 1024 * 1024)
    kafka.send(settings.topic_prefix + "recommend_log", key=key, value=None).get(30)  # tombstone
    kafka.send(settings.topic_prefix + "mystery_events", value=json.dumps(good[3]).encode()).get(30)
    kafka.send(settings.topic_prefix + "editor_selected_paraphrasing", value=encoded("C", was_accepted="yes")).get(30)
    kafka.send(settings.topic_prefix + "context_block", value=encoded("E", embedding_v1=[0.5, 0.5])).get(30)
    kafka.close()

    service = consume_until_idle(settings)

    assert stored_ids(mongo, "recommend_log") == {g["insert_id"] for g in good[:3]}
    letters = list(mongo.dead_letters.find())
    by_reason: dict[str, int] = {}
    for letter in letters:
        by_reason[letter["reason"]] = by_reason.get(letter["reason"], 0) + 1
        assert letter["error"] and letter["failed_at"] and letter["topic"].startswith(settings.topic_prefix)
        # topic:partition:offset:kafka-timestamp:digest (survives a topic re-created, events.md)
        assert letter["_id"].startswith(f"{letter['topic']}:{letter['partition']}:{letter['offset']}:")
        assert letter["_id"].split(":")[-2] == str(letter["kafka_timestamp"])
    assert by_reason == {"not_json": 2, "not_object": 1, "schema": 6, "too_large": 1, "empty": 1, "unknown_topic": 1}
    oversized = mongo.dead_letters.find_one({"reason": "too_large"})
    assert oversized["truncated"] and len(oversized["raw"]) == settings.dead_letter_prefix_bytes
    assert oversized["raw_size"] == len(big)
    wrong_type = mongo.dead_letters.find_one({"error": {"$regex": "latency_ms: Input should be a valid number"}})
    assert bytes(wrong_type["raw"]) == encoded_value(values, wrong_type)
    assert mongo.dead_letters.find_one({"error": {"$regex": "was_accepted"}})
    assert mongo.dead_letters.find_one({"error": {"$regex": "embedding_v1 must have 384 values"}})
    assert mongo.dead_letters.find_one({"reason": "unknown_topic"})["topic"].endswith("mystery_events")
    # The redelivered record is a no-op, not an error.
    assert service.metrics.sum_where("sentencify_consumer_records_total", outcome="duplicate") == 1
    # Everything, bad records included, is committed: a restart re-reads nothing.
    assert sum(committed_offsets(settings).values()) == len(values) + 1 + 2


def encoded_value(values: list[bytes], letter: dict) -> bytes:
    return values[letter["offset"]]


def test_two_consumers_in_one_group_split_partitions_and_store_nothing_twice(settings, mongo):
    first = ConsumerThread(settings, until_idle_s=4).start()
    second = ConsumerThread(settings, until_idle_s=4).start()
    wait_for(lambda: first.service._assigned and second.service._assigned, 60, "both consumers to get partitions")
    assert not first.service._assigned & second.service._assigned

    manifest = send(settings, generate(2000, seed=5, anomalies=0.0, embedding_dim=settings.embedding_dim))
    assert first.join(180) == 0 and second.join(180) == 0

    assert_manifest_stored(mongo, manifest)
    stored = [c.service.metrics.sum_where("sentencify_consumer_records_total", outcome="stored") for c in (first, second)]
    duplicates = [c.service.metrics.sum_where("sentencify_consumer_records_total", outcome="duplicate") for c in (first, second)]
    assert all(s > 0 for s in stored), f"both consumers must have written: {stored}"
    assert sum(stored) == sum(manifest.stored_counts().values())
    assert sum(duplicates) == 0


def test_metrics_and_health_endpoints(settings, mongo):
    send_raw(settings, "recommend_log", [encoded("I") for _ in range(30)] + [b"nope"])
    runner = ConsumerThread(settings, until_idle_s=30).start()
    port = wait_for(lambda: runner.service.metrics_server and runner.service.metrics_server.port, 30, "metrics server")
    wait_for(lambda: mongo.recommend_log.count_documents({}) == 30 and mongo.dead_letters.count_documents({}) == 1, 60, "ingest")

    def scrape() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

    text = wait_for(lambda: (t := scrape()) and "sentencify_consumer_lag_records{" in t and t, 30, "lag gauge")
    topic = settings.topic_prefix + "recommend_log"
    assert f'sentencify_consumer_records_total{{outcome="stored",topic="{topic}"}} 30.0' in text
    assert f'sentencify_consumer_dead_letters_total{{reason="not_json",topic="{topic}"}} 1.0' in text
    assert "sentencify_consumer_batches_total" in text
    assert f'sentencify_consumer_record_age_seconds_count{{topic="{topic}"}} 30.0' in text
    assert 'sentencify_consumer_write_duration_seconds_count{collection="recommend_log"}' in text
    assert "process_resident_memory_bytes" in text and "sentencify_consumer_last_poll_timestamp_seconds" in text
    health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status == 200
    runner.service.stop()
    assert runner.join(30) == 0


def test_replayed_dead_letters_are_stored_once_and_marked(settings, mongo):
    """After a fix, `replay-dead-letters` sends a rejected record through again; a second replay sends nothing."""
    from bson import Binary

    from sentencify.produce import producer
    from sentencify.replay import replay_dead_letters

    topic = settings.topic_prefix + "editor_recommend_options"
    good_now = encoded("A", insert_id="a-replayed")  # as if the rule that rejected it had since been fixed
    mongo.dead_letters.insert_many(
        [
            {
                "_id": f"{topic}:0:5",
                "topic": topic,
                "partition": 0,
                "offset": 5,
                "key": Binary(b"s-1"),
                "raw": Binary(good_now),
                "truncated": False,
                "reason": "schema",
                "error": "x",
            },
            {
                "_id": f"{topic}:0:6",
                "topic": topic,
                "partition": 0,
                "offset": 6,
                "key": None,
                "raw": Binary(b'{"insert_id": "a-big", "cont'),
                "truncated": True,
                "reason": "too_large",
                "error": "x",
            },
        ]
    )
    kafka = producer(settings)
    try:
        done = replay_dead_letters(mongo, kafka, known_topics={topic})
        assert (done.sent, done.truncated, done.by_topic) == (1, 1, {topic: 1})
        consume_until_idle(settings)
        assert mongo.editor_recommend_options.find_one({"_id": "a-replayed"}) is not None
        marked = mongo.dead_letters.find_one({"_id": f"{topic}:0:5"})
        assert marked["replayed_to"] == topic and marked["replayed_at"] is not None
        assert "replayed_at" not in mongo.dead_letters.find_one({"_id": f"{topic}:0:6"})
        assert replay_dead_letters(mongo, kafka, known_topics={topic}).sent == 0  # nothing twice
    finally:
        kafka.close()
    assert mongo.editor_recommend_options.count_documents({}) == 1

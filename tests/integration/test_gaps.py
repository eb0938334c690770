"""Records that left Kafka before the consumer read them: found, recorded once, alarmed, acknowledged
(events.md, last section; `sentencify gaps`).

The local broker (tansu 0.6) crashes on DeleteRecords, enforces no `retention.ms` and has no
CreatePartitions, so these tests make the same conditions in its storage, as those operations
would leave it: records deleted = their batch objects removed and the partition's low watermark
(its log start, what ListOffsets "earliest" answers) moved; a partition added = the topic's
partition count raised in the cluster's metadata object. Topics are deleted with DeleteTopics
itself (the stack's storage serves the S3 DeleteObjects tansu uses for it).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

from sentencify import gaps as gap_store
from sentencify.settings import Settings
from sentencify.steps.views import run_views
from sentencify.window import Window
from tests.factories import encoded
from tests.helpers import ConsumerThread, consume_until_idle, run_cli, stored_ids, wait_for
from tests.integration.test_views import analytics  # noqa: F401 (a fresh analytics database)

TOPIC = "recommend_log"  # type I; its collection has the same name


def _cluster(settings: Settings) -> Path:
    return settings.stack_dir / "kafka" / "tansu" / "clusters" / "tansu_cluster"


def _partition_dir(settings: Settings, topic: str, partition: int) -> Path:
    return _cluster(settings) / "topics" / topic / "partitions" / f"{partition:010d}"


def delete_records_before(settings: Settings, topic: str, partition: int, before: int) -> None:
    """What DeleteRecords(before) leaves on the broker: no record below `before`, log start `before`."""
    part = _partition_dir(settings, topic, partition)
    for batch in (part / "records").iterdir():
        if int(batch.stem) < before:
            batch.unlink()
    watermark = json.loads((part / "watermark.json").read_text())
    watermark["low"] = before
    (part / "watermark.json").write_text(json.dumps(watermark))


def add_partitions(settings: Settings, topic: str, count: int) -> None:
    """What CreatePartitions(count) leaves on the broker: the topic's partition count raised (the
    broker re-reads its metadata object within seconds)."""
    meta_path = _cluster(settings) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["topics"][topic]["topic"]["num_partitions"] = count
    meta_path.write_text(json.dumps(meta))


def produce_one_by_one(settings: Settings, topic: str, partition: int, n: int) -> list[str]:
    """n valid I records to one partition, each in a record batch of its own (so any offset can be deleted)."""
    kafka = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","), linger_ms=0)
    ids = []
    try:
        for _ in range(n):
            value = encoded("I")
            ids.append(json.loads(value)["insert_id"])
            kafka.send(topic, value=value, partition=partition).get(timeout=30)
    finally:
        kafka.close()
    return ids


def commit(settings: Settings, topic: str, partition: int, offset: int) -> None:
    """Set the group's committed offset, as a consumer of the group that stopped there would have."""
    probe = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","), group_id=settings.consumer_group, enable_auto_commit=False
    )
    try:
        probe.commit({TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)})
    finally:
        probe.close()


def _topics(settings: Settings) -> set[str]:
    probe = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","))
    try:
        return set(probe.topics())
    finally:
        probe.close()


def _partitions(settings: Settings, topic: str) -> set[int]:
    probe = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","))
    try:
        return set(probe.partitions_for_topic(topic) or ())
    finally:
        probe.close()


def healthz(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.split()[-1])
    return 0.0


def cli_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env()}


def test_records_deleted_before_the_consumer_read_them_are_a_gap_recorded_once(settings, mongo, caplog):
    topic = settings.topic_prefix + TOPIC
    first = produce_one_by_one(settings, topic, 0, 100)
    consume_until_idle(settings)
    assert stored_ids(mongo, TOPIC) == set(first)

    later = produce_one_by_one(settings, topic, 0, 50)  # offsets 100..149
    delete_records_before(settings, topic, 0, 130)  # 100..129 gone before the consumer comes back

    caplog.set_level(logging.ERROR, logger="sentencify.consumer")
    runner = ConsumerThread(settings, metrics_port=0).start()
    try:
        service = runner.service
        port = wait_for(lambda: service.metrics_server and service.metrics_server.port, 30, "metrics")
        wait_for(lambda: len(stored_ids(mongo, TOPIC)) == 120, 60, "the 20 records that still exist stored")
        assert stored_ids(mongo, TOPIC) == set(first) | set(later[30:])

        doc = wait_for(lambda: mongo[gap_store.GAPS].find_one(), 30, "the gap recorded")
        assert (doc["topic"], doc["partition"], doc["first_offset"], doc["last_offset"], doc["count"]) == (topic, 0, 100, 129, 30)
        assert doc["reason"] == "deleted" and doc["acknowledged"] is False and doc["found_at"] is not None
        assert mongo[gap_store.GAPS].count_documents({}) == 1
        errors = [r for r in caplog.records if r.getMessage() == "records lost before ingestion"]
        assert len(errors) == 1 and errors[0].levelno == logging.ERROR
        fields = errors[0].fields  # type: ignore[attr-defined]
        assert (fields["first_missing_offset"], fields["last_missing_offset"], fields["count"]) == (100, 129, 30)
        assert "replaying cannot bring them back" in fields["detail"]

        wait_for(lambda: metric(port, "sentencify_ingestion_gap_records_total", topic=topic) == 30, 30, "metric 30")
        health = wait_for(lambda: (h := healthz(port)).startswith("degraded") and h, 30, "degraded")
        assert "ingestion gap" in health and "sentencify gaps ack" in health, health

        # From outside: the command lists it (table and JSON), then acknowledges it.
        env = cli_env(settings)
        listed = run_cli("gaps", env=env)
        assert listed.returncode == 0, listed.stderr
        assert topic in listed.stdout and "100" in listed.stdout and "129" in listed.stdout and "unacknowledged" in listed.stdout
        as_json = json.loads(run_cli("gaps", "--json", env=env).stdout)
        assert [(g["id"], g["count"], g["acknowledged"]) for g in as_json] == [(doc["_id"], 30, False)]
        acked = run_cli("gaps", "ack", env=env)
        assert acked.returncode == 0 and "acknowledged 1" in acked.stdout, acked.stdout + acked.stderr
        wait_for(lambda: healthz(port) == "ok\n", 30, "ok once acknowledged")
        assert mongo[gap_store.GAPS].find_one()["acknowledged_at"] is not None
        assert runner.stop() == 0
    finally:
        if runner.thread.is_alive():
            runner.stop()

    # Found again (a restart before the commit moved past it: the group's offset set back to 100):
    # the same gap, not a second one, and not counted again.
    commit(settings, topic, 0, 100)
    service = consume_until_idle(settings)
    assert mongo[gap_store.GAPS].count_documents({}) == 1
    assert mongo[gap_store.GAPS].find_one()["acknowledged"] is True
    assert service.metrics.get("sentencify_ingestion_gap_records_total", topic=topic) == 0
    assert len(stored_ids(mongo, TOPIC)) == 120


def test_a_topic_recreated_while_the_consumer_was_down_is_a_gap_of_unknown_end(settings, mongo):
    topic = settings.topic_prefix + TOPIC
    old = produce_one_by_one(settings, topic, 0, 10)
    consume_until_idle(settings)
    assert stored_ids(mongo, TOPIC) == set(old)

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers.split(","))
    try:
        admin.delete_topics([topic])
        wait_for(lambda: topic not in _topics(settings), 30, "topic deleted")
        admin.create_topics([NewTopic(topic, settings.topic_partitions, 1)])
    finally:
        admin.close()
    new = produce_one_by_one(settings, topic, 0, 3)  # offsets 0..2 again

    consume_until_idle(settings)
    assert stored_ids(mongo, TOPIC) == set(old) | set(new), "the new topic is read from its first offset"
    gaps = list(mongo[gap_store.GAPS].find())
    assert [(g["topic"], g["partition"], g["first_offset"], g["last_offset"], g["count"], g["reason"]) for g in gaps] == [
        (topic, 0, 10, None, None, "recreated")
    ]
    listed = run_cli("gaps", env=cli_env(settings))
    assert "recreated" in listed.stdout and "unknown" in listed.stdout, listed.stdout + listed.stderr


def test_a_partition_added_while_the_consumer_runs_is_read_from_its_first_offset(settings, mongo):
    """The records reach the new partition before the consumer is assigned it; all are stored.

    On the local broker the running member cannot be handed the partition: kafka-python notices
    the new partition and rejoins, and its leader assigns it (seen in kafka-python's debug log),
    but tansu 0.6 answers SyncGroup with the previous assignment (its generation stays 0). So the
    member that gets it is the next one to join: the consumer is restarted after the records were
    produced. Either way the partition has no committed offset, and is read from its first offset."""
    topic = settings.topic_prefix + TOPIC
    runner = ConsumerThread(settings).start()
    try:
        wait_for(lambda: runner.service._assigned, 60, "partitions assigned")
        add_partitions(settings, topic, settings.topic_partitions + 1)
        wait_for(lambda: settings.topic_partitions in _partitions(settings, topic), 30, "the broker serves the new partition")
        added = produce_one_by_one(settings, topic, settings.topic_partitions, 5)  # before the consumer reads it
    finally:
        assert runner.stop() == 0
    service = consume_until_idle(settings)
    assert (topic, settings.topic_partitions) in service._assigned
    assert stored_ids(mongo, TOPIC) == set(added)
    assert mongo[gap_store.GAPS].count_documents({}) == 0


def test_the_dashboards_table_shows_gaps_by_topic_and_day_red_while_unacknowledged(settings, mongo, redis, analytics):  # noqa: F811
    """The views step copies ingestion_gaps; `v_ingestion_gaps` is what the dashboard's table reads (as its reader role)."""
    conn, reader_uri = analytics
    day1, day2 = datetime(2026, 11, 1, 10, tzinfo=UTC), datetime(2026, 11, 2, 3, tzinfo=UTC)
    gap_store.record(mongo, gap_store.Gap("t.a", 0, 100, 129, gap_store.DELETED, 30), day1)
    gap_store.record(mongo, gap_store.Gap("t.a", 2, 10, None, gap_store.RECREATED, 5), day1)
    gap_store.record(mongo, gap_store.Gap("t.b", 1, 0, 9, gap_store.DELETED, 10), day2)
    assert gap_store.acknowledge(mongo, day2, topic="t.b") == 1
    run_views(mongo, conn, Window(day1, day2), redis_client=redis)

    reader = psycopg2.connect(reader_uri)
    try:
        with reader, reader.cursor() as cur:
            cur.execute(
                "select day::text, topic, gaps, records_lost, count_unknown, ranges, unacknowledged, status "
                "from sentencify.v_ingestion_gaps order by day, topic"
            )
            assert cur.fetchall() == [
                ("2026-11-01", "t.a", 2, 35, True, "0:100..129, 2:10..?", 2, "unacknowledged"),
                ("2026-11-02", "t.b", 1, 10, False, "1:0..9", 0, "acknowledged"),
            ]
    finally:
        reader.close()

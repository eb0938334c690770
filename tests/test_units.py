"""Pure unit tests of the consumer's parts, the schemas, settings and the simulator (no services)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymongo.errors import BulkWriteError

from consumer.batch import Batcher
from consumer.dead_letter import BadRatioAlarm, dead_letter_doc
from consumer.decode import decode
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker
from consumer.records import BadRecord, Item, Position
from consumer.route import Router
from consumer.validate import Validator
from consumer.write import MongoWriter, TransientWriteError
from sentencify.redact import redact_uri
from sentencify.schemas import BY_CODE, EVENT_TYPES, LogA, LogE, to_utc_datetime
from sentencify.settings import Settings, SettingsError
from sentencify.simulate import Manifest, generate
from tests.factories import record

POS = Position("p.recommend_log", 0, 7)


# -- decode / route / validate ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, "empty"),
        (b"{x", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1]", "not_object"),
        (b'"s"', "not_object"),
        (b"x" * 11, "too_large"),
    ],
)
def test_decode_rejects_with_a_reason(value, reason):
    with pytest.raises(BadRecord) as err:
        decode(value, max_bytes=10)
    assert err.value.reason == reason and err.value.detail


def test_decode_returns_the_object():
    assert decode(b'{"a": 1}', max_bytes=100) == {"a": 1}


def test_router_knows_the_seven_topics_and_rejects_others():
    router = Router("p.")
    assert len(router.topic_names) == 7
    assert router.route("p.context_block").code == "E"
    with pytest.raises(BadRecord) as err:
        router.route("p.something_else")
    assert err.value.reason == "unknown_topic"


def test_validator_keeps_extra_fields_sets_id_and_lineage_and_keeps_absent_fields_absent():
    doc = Validator(384).validate(BY_CODE["A"], record("A", new_field={"x": 1}), POS)
    assert doc["_id"] == doc["insert_id"]
    assert doc["new_field"] == {"x": 1}
    assert doc["_kafka"] == {"topic": "p.recommend_log", "partition": 0, "offset": 7}
    assert "P_vec" not in doc  # not sent -> not stored as null
    assert doc["created_at"] == datetime(2026, 11, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "code, overrides, fragment",
    [
        ("A", {"insert_id": None}, "insert_id"),
        ("A", {"doc_id": 5}, "doc_id: Input should be a valid string"),
        ("A", {"doc_maturity_score": 1.5}, "doc_maturity_score"),
        ("C", {"was_accepted": "true"}, "was_accepted"),
        ("C", {"selected_option_index": True}, "selected_option_index"),
        ("I", {"latency_ms": -3}, "latency_ms"),
        ("I", {"created_at": True}, "boolean"),
        ("E", {"embedding_v1": [1.0, 2.0]}, "must have 384 values"),
        ("F", {"last_updated": "soon"}, "not an ISO-8601 timestamp"),
    ],
)
def test_validator_rejects_wrong_types_and_missing_fields_in_words(code, overrides, fragment):
    with pytest.raises(BadRecord) as err:
        Validator(384).validate(BY_CODE[code], record(code, **overrides), POS)
    assert err.value.reason == "schema"
    assert fragment in err.value.detail


def test_required_fields_missing_are_named():
    rec = record("B")
    del rec["source_recommend_event_id"]
    with pytest.raises(BadRecord) as err:
        Validator(384).validate(BY_CODE["B"], rec, POS)
    assert "source_recommend_event_id: Field required" in err.value.detail


def test_embedding_of_another_version_or_empty_is_accepted():
    assert LogE.model_validate(record("E", embedding_v1=[], embedding_version="v1"), context={"embedding_dim": 384})
    assert LogE.model_validate(record("E", embedding_v1=[1.0] * 8, embedding_version="v2"), context={"embedding_dim": 384})


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("2026-11-01T10:00:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),  # no offset means UTC
        ("2026-11-01T19:00:00+09:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T10:00:00.123456Z", datetime(2026, 11, 1, 10, 0, 0, 123000, tzinfo=UTC)),
        (1761991200000, datetime(2025, 11, 1, 10, tzinfo=UTC)),
    ],
)
def test_timestamps_become_utc_with_bson_precision(raw, expected):
    assert to_utc_datetime(raw) == expected


def test_vocabulary_values_outside_the_lists_are_stored_not_rejected():
    # pipeline.md: values outside the vocabularies are not *counted* (by the profile), so they must be kept.
    assert LogA.model_validate(record("A", reco_category_input="poetry")).reco_category_input == "poetry"


def test_every_event_type_has_its_key_field_required():
    for et in EVENT_TYPES:
        assert et.model.model_fields[et.key_field].is_required(), et.name


# -- batch -----------------------------------------------------------------------------------


def _item(offset: int, partition: int = 0) -> Item:
    return Item({"_id": offset}, Position("t", partition, offset))


def test_batch_due_on_size_then_on_age():
    b = Batcher(batch_size=3, flush_interval_s=1.0)
    assert not b.add("c", _item(0), now=0.0)
    assert b.due(0.5) == []
    assert b.due(1.0) == ["c"]  # oldest waited the interval
    b.add("c", _item(1), 0.1)
    assert b.add("c", _item(2), 0.2)  # full
    assert [i.position.offset for i in b.peek("c")] == [0, 1, 2]
    b.add("c", _item(3), 0.3)
    b.remove("c", 3)
    assert b.total == 1 and b.due(1.2) == [] and b.due(1.3) == ["c"]  # the remainder keeps its own age
    assert b.next_due_in(1.0) == pytest.approx(0.3)


def test_batch_drop_partitions_forgets_only_those():
    b = Batcher(10, 1.0)
    b.add("c", _item(0, 0), 0)
    b.add("c", _item(1, 1), 0)
    assert b.drop_partitions([("t", 0)]) == 1
    assert [i.position.partition for i in b.peek("c")] == [1] and b.total == 1


# -- offsets ---------------------------------------------------------------------------------


def test_offsets_never_pass_an_unwritten_record():
    t = OffsetTracker()
    tp = ("t", 0)
    for off in range(5):
        t.track(tp, off)
    t.done(tp, 1)
    t.done(tp, 2)
    assert t.position(tp) == 0  # offset 0 still pending
    t.done(tp, 0)
    assert t.position(tp) == 3
    t.done(tp, 3)
    t.done(tp, 4)
    assert t.committable() == {tp: 5}
    t.mark_committed({tp: 5})
    assert t.committable() == {}


def test_offsets_of_a_forgotten_partition_are_ignored():
    t = OffsetTracker()
    t.track(("t", 0), 0)
    t.forget([("t", 0)])
    t.done(("t", 0), 0)
    assert t.committable() == {}


# -- dead letters ----------------------------------------------------------------------------


def test_dead_letter_keeps_raw_bytes_and_truncates_only_oversized():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    small = dead_letter_doc(POS, b"k", b"{bad", BadRecord("not_json", "x"), 4, now)
    assert bytes(small["raw"]) == b"{bad" and not small["truncated"] and small["_id"] == "p.recommend_log:0:7"
    big = dead_letter_doc(POS, None, b"y" * 100, BadRecord("too_large", "x"), 4, now)
    assert bytes(big["raw"]) == b"yyyy" and big["truncated"] and big["raw_size"] == 100 and big["key"] is None


def test_alarm_judges_only_a_full_window_and_clears():
    g = BadRatioAlarm(window=4, max_ratio=0.5)
    tp = ("t", 0)
    assert [g.observe(tp, True) for _ in range(3)] == [None, None, None]  # 3 of 3 bad, window not full
    assert g.observe(tp, True) is True and tp in g.alarms
    assert "4 of the last 4" in g.describe(tp)
    assert [g.observe(tp, False) for _ in range(2)] == [None, False]  # 2 of 4: at the limit, not over it
    assert tp not in g.alarms


def test_alarm_slides_without_raising():
    g = BadRatioAlarm(window=4, max_ratio=0.5)
    tp = ("t", 0)
    for bad in (True, False, False, True, False, True, False, True, False):
        assert g.observe(tp, bad) is None  # never more than 2 of the last 4


# -- write classification ------------------------------------------------------------------


def test_duplicate_keys_are_success_and_other_document_errors_are_rejections():
    err = BulkWriteError(
        {
            "nInserted": 1,
            "writeErrors": [
                {"index": 1, "code": 11000, "errmsg": "dup"},
                {"index": 2, "code": 10334, "errmsg": "too large"},
            ],
        }
    )
    outcome = MongoWriter._classify(err)
    assert outcome.inserted == 1 and outcome.duplicates == 1 and 2 in outcome.rejected


def test_retryable_document_errors_and_write_concern_errors_are_transient():
    with pytest.raises(TransientWriteError):
        MongoWriter._classify(BulkWriteError({"writeErrors": [{"index": 0, "code": 91, "errmsg": "shutting down"}]}))
    with pytest.raises(TransientWriteError):
        MongoWriter._classify(BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}))


# -- settings, metrics, redaction, simulator ---------------------------------------------------


def test_settings_defaults_and_errors_name_the_variable():
    s = Settings.from_env({})
    assert (s.batch_size, s.flush_interval_ms, s.topic_prefix, s.consumer_group, s.mongo_db) == (
        100,
        1000,
        "sentencify.",
        "sentencify-ingest",
        "sentencify",
    )
    assert s.embedding_dim == 384 and s.qdrant_collection == "context_block_v1"
    with pytest.raises(SettingsError, match="BATCH_SIZE"):
        Settings.from_env({"BATCH_SIZE": "lots"})
    with pytest.raises(SettingsError, match="DLQ_MAX_BAD_RATIO"):
        Settings.from_env({"DLQ_MAX_BAD_RATIO": "2"})
    assert Settings.from_env({"QDRANT_URL": "http://q:6333"}).qdrant_path is None


def test_settings_survive_a_child_process_and_each_is_documented():
    import dataclasses

    custom = dataclasses.replace(
        Settings.from_env({"QDRANT_URL": "http://q:6333", "SUPERSET_PASSWORD": "pw"}),
        batch_size=7,
        etl_time_gap_s=2.5,
        superset_port=9999,
    )
    assert Settings.from_env(custom.to_env()) == custom
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    undocumented = [v for v in Settings.variables() if f"`{v}`" not in readme]
    assert not undocumented, f"add these to README's settings table: {undocumented}"


def test_redaction_hides_passwords_only():
    assert redact_uri("mongodb://u:secret@h:1/db") == "mongodb://u:***@h:1/db"
    assert redact_uri("redis://h:6379/0") == "redis://h:6379/0"


def test_metrics_render_prometheus_text_with_histograms_and_process_metrics():
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics()
    m.inc("sentencify_consumer_records_total", 3, topic="t", outcome="stored")
    m.set("sentencify_consumer_lag_records", 5, topic="t", partition=0)
    m.observe("sentencify_consumer_write_duration_seconds", 0.02, collection="c")
    m.observe("sentencify_consumer_record_age_seconds", 3.0, topic="t")
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert families["sentencify_consumer_records"].type == "counter"
    assert families["sentencify_consumer_write_duration_seconds"].type == "histogram"
    assert families["sentencify_consumer_record_age_seconds"].type == "histogram"
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "python_info"} <= set(families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("sentencify_consumer_records_total", (("outcome", "stored"), ("topic", "t")))] == 3
    assert samples[("sentencify_consumer_lag_records", (("partition", "0"), ("topic", "t")))] == 5.0
    assert samples[("sentencify_consumer_record_age_seconds_bucket", (("le", "5.0"), ("topic", "t")))] == 1
    assert (
        m.sum_where("sentencify_consumer_records_total", outcome="stored") == 3
        and m.total("sentencify_consumer_lag_records") == 5
    )
    for name in __import__("consumer.metrics", fromlist=["SPECS"]).SPECS:
        assert name.endswith(("_total", "_seconds", "_bytes", "_records", "_ratio", "_alarm", "_paused", "_partitions")), name


def test_simulator_is_deterministic_and_covers_every_anomaly():
    start = datetime(2026, 11, 1, tzinfo=UTC)
    a = [(r.topic_suffix, r.value) for r in generate(300, seed=9, anomalies=0.5, start=start, embedding_dim=16)]
    b = [(r.topic_suffix, r.value) for r in generate(300, seed=9, anomalies=0.5, start=start, embedding_dim=16)]
    assert a == b
    m = Manifest()
    for r in generate(300, seed=9, anomalies=0.5, start=start, embedding_dim=16):
        m.add(r)
    assert set(m.expected_ids) == {et.name for et in EVENT_TYPES}
    assert m.dead_letters  # malformed records are part of the mix
    # Every produced good record validates with its model.
    validator = Validator(16)
    for r in generate(100, seed=1, anomalies=0.0, start=start, embedding_dim=16):
        validator.validate(BY_CODE_BY_NAME[r.topic_suffix], json.loads(r.value), POS)


BY_CODE_BY_NAME = {et.name: et for et in EVENT_TYPES}

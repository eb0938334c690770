"""Unit tests (no services): decode, route and validate: bytes -> the document of its event type, or a reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.decode import decode
from consumer.records import BadRecord, Position
from consumer.route import Router
from consumer.validate import Validator
from sentencify.schemas import BY_CODE, EVENT_TYPES, LogA, LogE, to_utc_datetime
from tests.factories import record

POS = Position("p.recommend_log", 0, 7)


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

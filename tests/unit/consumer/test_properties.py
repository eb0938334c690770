"""Property-based tests (hypothesis) of the consumer's record path: no bytes can make it raise."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.records import BadRecord, Position
from consumer.route import Router
from consumer.storable import INT64_MAX, INT64_MIN, MAX_BSON_BYTES, MAX_DEPTH
from consumer.validate import Validator, to_document
from sentencify.schemas import BY_CODE
from tests.factories import record

PREFIX = "p."
ROUTER = Router(PREFIX)
VALIDATOR = Validator(embedding_dim=4)
TOPICS = [PREFIX + et.name for et in BY_CODE.values()] + [PREFIX + "mystery"]

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
timestamps = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.text(max_size=30),
    st.sampled_from(["0001-01-01T00:00:00+09:00", "9999-12-31T23:30:00-01:00", "0001-01-01T00:00:00Z"]),
)


def deep(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"x": value}
    return value


def depth(value, level: int = 1) -> int:
    if isinstance(value, dict):
        return max([level] + [depth(v, level + 1) for v in value.values()])
    if isinstance(value, list):
        return max([level] + [depth(v, level + 1) for v in value])
    return level


def assert_storable_or_dead_letter(topic: str, value: bytes | None) -> None:
    """The property: a storable document or a BadRecord, never any other exception."""
    try:
        collection, doc = to_document(ROUTER, VALIDATOR, 1024 * 1024, Position(topic, 0, 1), value)
    except BadRecord as err:
        assert err.reason and err.detail
        return
    stored = dict(doc, ingested_at=datetime.now(UTC))
    assert len(bson.encode(stored)) <= MAX_BSON_BYTES  # raises on NUL keys, big ints, bad strings
    assert depth(stored) <= MAX_DEPTH
    assert doc["_kafka"] == {"topic": topic, "partition": 0, "offset": 1}
    assert collection == topic[len(PREFIX) :]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(TOPICS), value=st.one_of(st.none(), st.binary(max_size=300)))
def test_arbitrary_bytes_are_stored_or_dead_lettered(topic, value):
    assert_storable_or_dead_letter(topic, value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(TOPICS), value=json_values)
def test_arbitrary_json_is_stored_or_dead_lettered(topic, value):
    assert_storable_or_dead_letter(topic, json.dumps(value).encode())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.sampled_from(list("ABCDEFI")),
    extra=st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    field_value=json_values,
    ts=timestamps,
    nest=st.integers(min_value=0, max_value=140),
)
def test_valid_records_with_hostile_fields_are_stored_or_dead_lettered(code, extra, field_value, ts, nest):
    rec = {**record(code), **extra}  # an extra field may be named "code" too
    rec["created_at" if "created_at" in rec else "last_updated"] = ts
    rec["weird"] = field_value
    rec["nested"] = deep(nest)
    rec["_id"], rec["_kafka"], rec["ingested_at"] = "forged", {"offset": -1}, "2000-01-01"
    assert_storable_or_dead_letter(PREFIX + BY_CODE[code].name, json.dumps(rec).encode())


@pytest.mark.parametrize(
    "value, field",
    [
        ({"big": 2**64 - 1}, "big"),
        ({"small": INT64_MIN - 1}, "small"),  # a parser reads it as a double; still out of range (events.md)
        ({"ok": INT64_MAX}, None),
        ({"bad\u0000key": 1}, "bad"),
        ({"P_vec": {"em\u0000ail": 0.5}}, "P_vec"),
        ({"nested": deep(98)}, None),  # document 1 + 98 + the empty leaf object = 100 levels
        ({"nested": deep(99)}, "nested"),
        ({"nested": deep(259)}, "nesting deeper than 100"),
        ({"list": [[[[1]]]]}, None),
    ],
)
def test_mongodb_limits_are_checked_and_name_the_field(value, field):
    rec = {**record("A"), **value}
    raw = json.dumps(rec).encode()
    if field is None:
        to_document(ROUTER, VALIDATOR, 1024 * 1024, Position(PREFIX + "editor_recommend_options", 0, 1), raw)
        return
    with pytest.raises(BadRecord) as err:
        to_document(ROUTER, VALIDATOR, 1024 * 1024, Position(PREFIX + "editor_recommend_options", 0, 1), raw)
    assert err.value.reason == "unstorable" and field in err.value.detail


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+09:00", "9999-12-31T23:30:00-01:00", 2**62, -(2**62)])
def test_timestamps_without_a_utc_value_in_years_1_to_9999_are_schema_errors(ts):
    raw = json.dumps(record("C", created_at=ts)).encode()
    with pytest.raises(BadRecord) as err:
        to_document(ROUTER, VALIDATOR, 1024 * 1024, Position(PREFIX + "editor_selected_paraphrasing", 0, 1), raw)
    assert err.value.reason == "schema" and "created_at" in err.value.detail


def test_a_document_over_16_mib_once_enriched_is_refused():
    # Many tiny arrays grow ~4x from JSON to BSON: 5 MB of JSON is over 16 MiB of BSON.
    raw = json.dumps({**record("I"), "blob": [[]] * 1_400_000}).encode()
    with pytest.raises(BadRecord) as err:
        to_document(ROUTER, VALIDATOR, 64 * 1024 * 1024, Position(PREFIX + "recommend_log", 0, 1), raw)
    assert err.value.reason == "unstorable" and "16 MiB" in err.value.detail


def test_producer_supplied_id_kafka_and_ingested_at_never_survive():
    raw = json.dumps({**record("I", insert_id="i-own"), "_id": "forged", "_kafka": {"offset": -1}}).encode()
    _, doc = to_document(ROUTER, VALIDATOR, 1024 * 1024, Position(PREFIX + "recommend_log", 2, 9), raw)
    assert doc["_id"] == "i-own" and doc["_kafka"] == {"topic": PREFIX + "recommend_log", "partition": 2, "offset": 9}

"""Property-based tests (hypothesis) of events.md "Bad input" rules: 64-bit integer literals, leap
seconds, float32 embeddings, NUL inside strings, lone surrogate escapes."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta, timezone

import bson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.records import BadRecord, Position
from consumer.route import Router
from consumer.storable import INT64_MAX, INT64_MIN
from consumer.validate import Validator, to_document
from sentencify.schemas import BY_CODE
from sentencify.schemas.common import FLOAT32_MAX
from tests.factories import record

PREFIX = "p."
ROUTER = Router(PREFIX)
VALIDATOR = Validator(embedding_dim=4)


def convert(code: str, raw: bytes) -> dict:
    return to_document(ROUTER, VALIDATOR, 1024 * 1024, Position(PREFIX + BY_CODE[code].name, 0, 3), raw)[1]


def refused(code: str, raw: bytes) -> BadRecord:
    with pytest.raises(BadRecord) as err:
        convert(code, raw)
    return err.value


# -- integer literals ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(n=st.one_of(st.integers(), st.integers(min_value=2**63 - 3, max_value=2**70), st.integers(max_value=-(2**63) + 3)))
def test_an_integer_literal_is_stored_exactly_or_refused_naming_its_field(n):
    raw = json.dumps({**record("I"), "extra": {"counts": [1, n]}}).encode()
    if INT64_MIN <= n <= INT64_MAX:
        assert convert("I", raw)["extra"]["counts"][1] == n
        return
    err = refused("I", raw)
    assert err.reason == "unstorable" and "extra.counts.1" in err.detail and str(n) in err.detail


# Past a double's range (10^309) orjson refuses the literal as "infinity"; past 4300 digits Python's
# int() refuses it: each is still an integer out of range, named, not "not JSON".
@pytest.mark.parametrize(
    "literal",
    [b"18446744073709551616", b"-9223372036854775809", b"1" + b"0" * 40, b"1" + b"0" * 400, b"-" + b"9" * 5000],
)
def test_integer_literals_a_parser_reads_as_doubles_are_still_out_of_range(literal):
    raw = json.dumps(record("I")).encode()[:-1] + b', "big": ' + literal + b"}"
    err = refused("I", raw)
    assert err.reason == "unstorable" and err.detail.startswith("big:")


@settings(max_examples=200, deadline=None)
@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_float_literals_stay_valid_whatever_their_size(x):
    raw = json.dumps({**record("I"), "ratio": x, "note": "12345678901234567890123"}).encode()
    assert convert("I", raw)["ratio"] == x


# -- leap seconds ----------------------------------------------------------------------------

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


def iso_offset(tz: timezone) -> str:
    minutes = int(tz.utcoffset(None).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@settings(max_examples=300, deadline=None)
@given(
    day=st.dates(),
    tz=st.one_of(st.none(), offsets),
    fraction=st.sampled_from(["", ".0", ".5", ".999999", ",25"]),
    code=st.sampled_from(list("ABCDI")),
)
def test_a_leap_second_is_the_last_millisecond_of_its_minute_in_utc(day, tz, fraction, code):
    text = f"{day.isoformat()}T23:59:60{fraction}" + ("Z" if tz is None else iso_offset(tz))
    raw = json.dumps(record(code, created_at=text)).encode()
    last_ms = datetime(day.year, day.month, day.day, 23, 59, 59, 999000, tzinfo=tz or UTC)
    try:
        expected = last_ms.astimezone(UTC)
    except OverflowError:  # no UTC value in years 1..9999: a schema error, as for any timestamp
        err = refused(code, raw)
        assert err.reason == "schema" and "created_at" in err.detail
        return
    assert convert(code, raw)["created_at"] == expected


@pytest.mark.parametrize(
    "field, code",
    [("last_updated", "F"), ("valid_until", "F"), ("created_at", "C")],
)
def test_every_timestamp_field_takes_a_leap_second(field, code):
    doc = convert(code, json.dumps(record(code, **{field: "2016-12-31T23:59:60.5+09:00"})).encode())
    assert doc[field] == datetime(2016, 12, 31, 14, 59, 59, 999000, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2016-12-31T12:34:60Z", "2016-12-31T23:59:61Z", "2016-12-31T23:60:00Z"])
def test_second_60_outside_a_leap_second_is_a_schema_error(text):
    err = refused("C", json.dumps(record("C", created_at=text)).encode())
    assert err.reason == "schema" and "created_at" in err.detail


# -- embeddings ------------------------------------------------------------------------------


def fits_float32(x: float) -> bool:
    try:
        struct.pack("<f", x)
    except OverflowError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    x=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=FLOAT32_MAX * 0.999999, max_value=FLOAT32_MAX * 1.000001),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ),
    at=st.integers(min_value=0, max_value=3),
)
def test_an_embedding_is_stored_only_when_every_value_is_a_finite_float32(x, at):
    vector = [0.25] * 4
    vector[at] = x
    raw = json.dumps(record("E", embedding_v1=vector)).encode()
    if fits_float32(float(x)):
        assert convert("E", raw)["embedding_v1"][at] == float(x)
        return
    err = refused("E", raw)
    assert err.reason == "schema" and "embedding_v1" in err.detail and f"value {at}" in err.detail


# -- text ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=30))
def test_any_unicode_string_value_nul_included_is_stored_as_sent(text):
    raw = json.dumps(record("A", reco_category_input=text + "\x00", user_id=text)).encode()
    doc = convert("A", raw)
    assert doc["reco_category_input"] == text + "\x00" and doc["user_id"] == text
    assert bson.decode(bson.encode(doc))["reco_category_input"] == text + "\x00"


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\udfff", b"\\ud800\\ud800", b"x\\udc00y"])
def test_a_lone_surrogate_escape_is_a_dead_letter_that_says_so(escape):
    raw = json.dumps(record("A")).encode()[:-1] + b', "note": "' + escape + b'"}'
    err = refused("A", raw)
    assert err.reason == "not_json" and "lone UTF-16 surrogate" in err.detail


def test_a_surrogate_pair_escape_is_one_character():
    raw = json.dumps(record("A", user_id="\U0001f600")).encode()  # json.dumps escapes it as a pair
    assert b"\\ud83d\\ude00" in raw and convert("A", raw)["user_id"] == "\U0001f600"


# -- epoch milliseconds ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(ms=st.one_of(st.integers(-62135596800000, 253402300799999), st.sampled_from([253402300799999, -62135596799999])))
def test_epoch_milliseconds_are_stored_to_the_millisecond(ms):
    """Exact integer arithmetic: through a double (ms / 1000) 9999-12-31T23:59:59.999 became .998."""
    doc = convert("I", json.dumps({**record("I"), "created_at": ms}).encode())
    assert doc["created_at"] == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)

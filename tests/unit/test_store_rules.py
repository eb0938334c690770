"""The store rules after MongoDB (sentencify/stores), as properties over open-ended values."""

from __future__ import annotations

import math

import orjson
import psycopg2.errors
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pymongo.errors import AutoReconnect, BulkWriteError, DocumentTooLarge, NetworkTimeout, OperationFailure

from sentencify.steps.quarantine import bisect
from sentencify.stores import mongodb, postgres, qdrant, redis_json

finite = st.floats(allow_nan=False, allow_infinity=False)
any_text = st.text(st.characters(codec=None), max_size=3000)  # lone surrogates and NUL included


@given(finite_values=st.lists(finite, min_size=1, max_size=50))
def test_the_mean_of_finite_values_is_finite_and_within_them(finite_values):
    mean = redis_json.finite_mean(finite_values)
    lo, hi = min(finite_values), max(finite_values)
    slack = 4 * math.ulp(max(abs(lo), abs(hi)))  # the plain sum's rounding, kept for the same bits as before
    assert math.isfinite(mean) and lo - slack <= mean <= hi + slack


def test_the_mean_of_the_largest_floats_is_theirs():
    assert redis_json.finite_mean([1.7e308, 1.7e308]) == 1.7e308
    assert redis_json.finite_mean([1.7976931348623157e308] * 3) == 1.7976931348623157e308
    assert redis_json.finite_mean([1.0, 2.0, 4.0]) == pytest.approx(7 / 3)


@given(
    value=st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), finite, any_text),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
        max_leaves=20,
    )
)
def test_redis_json_is_strict_json(value):
    orjson.loads(redis_json.dumps(value))  # raises on NaN, Infinity and lone surrogates


def test_redis_json_refuses_non_finite_numbers():
    with pytest.raises(ValueError):
        redis_json.dumps({"x": [float("inf")]})


@given(value=any_text)
def test_postgres_text_holds_no_nul_no_surrogate_and_fits_an_index_entry(value):
    stored = postgres.text(value)
    assert "\x00" not in stored and len(stored.encode("utf-8")) <= postgres.TEXT_BYTES
    assert postgres.text(stored) == stored  # applying the rule twice changes nothing
    if "\x00" not in value and len(value.encode("utf-8", "surrogatepass")) <= postgres.TEXT_BYTES and value.isprintable():
        assert stored == value or any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def test_long_distinct_texts_stay_distinct():
    assert postgres.text("a" * 5000 + "1") != postgres.text("a" * 5000 + "2")


def test_postgres_jsonb_is_strict_json_without_nul():
    text = postgres.jsonb({"a\x00": [float("nan"), "x\x00", 2**70]})
    assert "\\u0000" not in text and orjson.loads(str(text)) == {"a\ufffd": [None, "x\ufffd", 2**70]}


def test_a_long_jsonb_document_stays_json_in_a_row():
    # A full run's summary with drift samples is longer than TEXT_BYTES: cutting its text as a
    # text column's made PostgreSQL refuse the views step's pipeline_runs insert.
    summary = {"drift": {f"store{i}": {"samples": {"missing": [f"session-{i}-{j}" * 3 for j in range(5)]}} for i in range(20)}}
    doc = postgres.jsonb(summary)
    assert len(doc.encode()) > postgres.TEXT_BYTES
    (stored,) = postgres.row((doc,))
    assert orjson.loads(stored) == summary


@given(vector=st.lists(finite, max_size=400))
@example(vector=[5e-324, 5e-324])  # a subnormal norm (5e-324, not 7e-324): the plain division gave [1, 1]
@example(vector=[5e-324, 1e-323, 1.5e-323])
def test_a_finite_vector_becomes_a_float32_unit_vector(vector):
    unit = qdrant.unit_vector(vector)
    assert unit is not None and len(unit) == len(vector)
    assert all(-1.0 <= x <= 1.0 for x in unit)
    if any(vector):
        assert math.fsum(x * x for x in unit) == pytest.approx(1.0)
        largest = max(range(len(vector)), key=lambda i: abs(vector[i]))
        assert math.copysign(1, unit[largest]) == math.copysign(1, vector[largest])  # same direction


def test_a_vector_with_nan_or_infinity_has_no_storable_form():
    assert qdrant.unit_vector([1.0, float("nan")]) is None and qdrant.unit_vector([float("inf")]) is None


def test_data_errors_are_told_from_a_store_that_is_down():
    assert mongodb.is_data_error(DocumentTooLarge("too big"))
    assert mongodb.is_data_error(BulkWriteError({"writeErrors": [{"code": 10334}]}))
    assert not mongodb.is_data_error(AutoReconnect("gone")) and not mongodb.is_data_error(NetworkTimeout("slow"))
    assert not mongodb.is_data_error(OperationFailure("no", code=13))  # Unauthorized: about the store
    assert postgres.is_data_error(psycopg2.errors.CharacterNotInRepertoire())
    assert postgres.is_data_error(psycopg2.errors.ProgramLimitExceeded())
    assert not postgres.is_data_error(psycopg2.OperationalError("server closed the connection"))


@given(n=st.integers(0, 200), bad=st.sets(st.integers(0, 199), max_size=5))
def test_bisect_writes_every_good_item_and_returns_exactly_the_bad_ones(n, bad):
    bad = {b for b in bad if b < n}
    written: list[int] = []

    def write(items):
        if bad & set(items):
            raise ValueError("bad row")
        written.extend(items)

    found = bisect(list(range(n)), write, lambda exc: isinstance(exc, ValueError))
    assert {i for i, _ in found} == bad and sorted(written) == [i for i in range(n) if i not in bad]


def test_bisect_lets_an_outage_through():
    def write(items):
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        bisect([1, 2, 3], write, lambda exc: isinstance(exc, ValueError))

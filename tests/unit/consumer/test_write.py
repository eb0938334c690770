"""Unit tests (no services): write classification: duplicates, permanent and transient errors."""

from __future__ import annotations

import pytest
from pymongo.errors import BulkWriteError

from consumer.records import Position
from consumer.write import MongoWriter, TransientWriteError

POS = Position("p.recommend_log", 0, 7)


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
    outcome, duplicate = MongoWriter._classify(err)
    assert outcome.inserted == 1 and duplicate == [1] and 2 in outcome.rejected


def test_retryable_document_errors_and_write_concern_errors_are_transient():
    with pytest.raises(TransientWriteError):
        MongoWriter._classify(BulkWriteError({"writeErrors": [{"index": 0, "code": 91, "errmsg": "shutting down"}]}))
    with pytest.raises(TransientWriteError):
        MongoWriter._classify(BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}))


def test_content_ignores_what_the_consumer_adds_and_compares_times_in_utc():
    from datetime import UTC, datetime, timedelta, timezone

    from consumer.write import same_content

    when = datetime(2026, 1, 1, 9, tzinfo=UTC)
    doc = {"_id": "k", "n": 1, "at": when, "_kafka": {"offset": 1}, "ingested_at": when}
    stored = {"_id": "k", "n": 1, "at": when.astimezone(timezone(timedelta(hours=9))), "_kafka": {"offset": 5}}
    assert same_content(doc, stored)
    assert not same_content(doc, {**stored, "n": 2})
    assert not same_content(doc, {**stored, "extra": None})


def test_the_earlier_offset_of_the_same_partition_displaces_unless_produced_after_the_stored_one():
    from datetime import UTC, datetime

    from consumer.write import displaces

    stored = {"_kafka": {"topic": "t", "partition": 0, "offset": 9}, "ingested_at": datetime(2026, 1, 1, tzinfo=UTC)}
    before = int(datetime(2025, 12, 31, tzinfo=UTC).timestamp() * 1000)
    after = int(datetime(2026, 1, 2, tzinfo=UTC).timestamp() * 1000)
    assert displaces({"_kafka": {"topic": "t", "partition": 0, "offset": 3}}, stored, before)
    assert displaces({"_kafka": {"topic": "t", "partition": 0, "offset": 3}}, stored)
    assert not displaces({"_kafka": {"topic": "t", "partition": 0, "offset": 3}}, stored, after)  # topic re-created
    assert not displaces({"_kafka": {"topic": "t", "partition": 1, "offset": 3}}, stored, before)
    assert not displaces({"_kafka": {"topic": "t", "partition": 0, "offset": 10}}, stored, before)

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
    outcome = MongoWriter._classify(err)
    assert outcome.inserted == 1 and outcome.duplicates == 1 and 2 in outcome.rejected


def test_retryable_document_errors_and_write_concern_errors_are_transient():
    with pytest.raises(TransientWriteError):
        MongoWriter._classify(BulkWriteError({"writeErrors": [{"index": 0, "code": 91, "errmsg": "shutting down"}]}))
    with pytest.raises(TransientWriteError):
        MongoWriter._classify(BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}))

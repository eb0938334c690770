"""The lateness bound is honest (pipeline.md "Windows and late data"; sentencify.mongo.VISIBILITY_BOUND_S).

MongoDB is stalled (SIGSTOP) longer than the consumer's write timeout while a batch is in flight:
the server holds the insert, stamped before the stall, and applies it when it resumes, after the
consumer gave up. A chain run is made meanwhile (its look-back is short here, so its progress passes
that stamp). After the resume, a later run must still process every record: the consumer's retry
meets the late-applied documents as duplicates with a stale stamp and stamps them with the server's
time. Checked against a full rebuild, which reads everything.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import MongoClient

from consumer.records import Position
from consumer.route import Router
from consumer.validate import Validator, to_document
from sentencify import mongo as mongo_module
from sentencify.schemas import EVENT_TYPES
from sentencify.simulate import generate
from sentencify.steps import progress
from sentencify.steps.runner import run_step
from tests.helpers import ConsumerThread, assert_manifest_stored, consume_until_idle, send, wait_for
from tests.integration.test_conflicts import stoppable_mongo  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def stored(db) -> int:
    return sum(db[et.name].count_documents({}) for et in EVENT_TYPES)


def test_a_write_applied_after_the_consumer_gave_up_is_processed_by_a_later_run(
    settings,
    stoppable_mongo,  # noqa: F811
    monkeypatch,
):
    uri, pid = stoppable_mongo
    monkeypatch.setattr(mongo_module, "WRITE_TIMEOUT_S", 2)
    monkeypatch.setattr(mongo_module, "VISIBILITY_BOUND_S", 2)
    monkeypatch.setattr(progress, "VISIBILITY_BOUND_S", 2, raising=False)  # the look-back: 0 s skew + 2 s
    s = dataclasses.replace(settings, mongo_uri=uri, clock_skew_s=0, batch_size=50)
    db = MongoClient(uri, tz_aware=True)[s.mongo_db]
    records = list(generate(120, seed=31, anomalies=0.0, embedding_dim=s.embedding_dim))
    half = len(records) // 2
    consumer = ConsumerThread(s).start()
    try:
        manifest = send(s, records[:half])
        wait_for(lambda: stored(db) == sum(len(i) for i in manifest.expected_ids.values()), 60, "first half stored")
        run_step("etl", None, s)

        os.kill(pid, signal.SIGSTOP)
        try:
            later = send(s, records[half:])
            for collection, ids in later.expected_ids.items():
                manifest.expected_ids.setdefault(collection, set()).update(ids)
            wait_for(lambda: consumer.service.path.writes.records() > 0, 30, "a batch in flight")
            time.sleep(4)  # past the 2 s write timeout and the 2 s look-back
            during = threading.Thread(target=run_step, args=("etl", None, s))
            during.start()  # a chain run meanwhile: it waits for the stalled server like the insert
            time.sleep(1)
        finally:
            os.kill(pid, signal.SIGCONT)
        during.join(120)
        assert not during.is_alive()
        wait_for(lambda: stored(db) == sum(len(i) for i in manifest.expected_ids.values()), 120, "second half stored")
        wait_for(lambda: consumer.service.path.idle(), 60, "the consumer idle")
    finally:
        assert consumer.stop() == 0
    assert_manifest_stored(db, manifest)

    run_step("etl", None, s)  # a later run: incremental, from the progress the run during the stall left
    incremental = {d["_id"]: d for d in db.training_examples.find()}
    run_step("etl", None, s, full=True)  # reads every record
    rebuilt = {d["_id"]: d for d in db.training_examples.find()}
    assert set(incremental) == set(rebuilt) and len(rebuilt) >= 100
    sessions = set(db.editor_recommend_options.distinct("recommend_session_id"))
    assert set(rebuilt) <= sessions


def test_a_late_applied_write_with_a_stale_stamp_is_stamped_anew_when_its_record_is_written_again(settings, mongo, monkeypatch):
    """The same hazard, deterministic: the documents appear with the stamp of an attempt the consumer
    gave up on, after a run whose progress passed that stamp (as a server applying a held insert
    late does); their records are uncommitted, so the consumer writes them again."""
    monkeypatch.setattr(mongo_module, "WRITE_TIMEOUT_S", 2)
    monkeypatch.setattr(progress, "VISIBILITY_BOUND_S", 2, raising=False)
    s = dataclasses.replace(settings, clock_skew_s=0)
    records = list(generate(40, seed=5, anomalies=0.0, embedding_dim=s.embedding_dim))
    manifest = send(s, records)
    stale = datetime.now(UTC) - timedelta(seconds=30)
    router, validator = Router(s.topic_prefix), Validator(s.embedding_dim)
    held: dict[str, list[dict]] = {}
    for n, rec in enumerate(records):
        collection, doc = to_document(
            router, validator, s.max_record_bytes, Position(s.topic_prefix + rec.topic_suffix, 0, n), rec.value
        )
        held.setdefault(collection, []).append({**doc, "ingested_at": stale})

    run_step("etl", None, s)  # its progress passes `stale`; the held writes are not visible yet
    for collection, docs in held.items():
        mongo[collection].insert_many(docs, ordered=False)  # the server applies them now, stamps stale
    consume_until_idle(s)  # every record again: duplicates with a stale stamp, stamped anew

    assert_manifest_stored(mongo, manifest)
    assert mongo.editor_recommend_options.count_documents({"ingested_at": {"$lte": stale}}) == 0
    run_step("etl", None, s)
    incremental = {d["_id"] for d in mongo.training_examples.find({}, {"_id": 1})}
    run_step("etl", None, s, full=True)
    assert incremental == {d["_id"] for d in mongo.training_examples.find({}, {"_id": 1})} and len(incremental) >= 30

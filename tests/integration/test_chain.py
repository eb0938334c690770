"""The chain's steps against the real MongoDB-protocol server, Redis and Qdrant (local mode)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import MongoClient

from sentencify import vectorstore
from sentencify.steps import examples
from sentencify.steps.etl import run_etl
from sentencify.steps.profiles import REDIS_KEY, run_profile
from sentencify.steps.vectors import run_vectors
from tests.chain_data import DAY, Logs, at, hour, snapshot

NOW = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture
def logs(mongo):
    return Logs(mongo)


@pytest.fixture
def qdrant(settings, tmp_path):
    qc = vectorstore.client(type(settings)(**{**settings.__dict__, "qdrant_url": None, "qdrant_path": str(tmp_path / "q")}))
    yield qc
    qc.close()


def example(db, session):
    doc = db.training_examples.find_one({"_id": session})
    return None if doc is None else {k: v for k, v in doc.items() if k != "processed_at"}


# -- the roadmap's stand-alone test ----------------------------------------------------------


def test_etl_builds_the_exact_training_example_from_a_b_c_d_e_f(mongo, logs):
    logs.e(10, "s1", embedding=[0.5] * 384)
    logs.f(10, "f-old", last_updated=at(9), hint="report", valid_until=at(12))
    logs.f(10, "f-expired", last_updated=at(9, 30), hint="thesis", valid_until=at(9, 45))
    logs.f(10, "f-later", last_updated=at(10, 5), hint="marketing")  # after A: must not leak in
    logs.a(
        10,
        "s1",
        P_vec={"email": 0.6, "report": 0.4},
        P_rule={"email": 1.0},
        P_doc={"report": 1.0},
        doc_maturity_score=0.4,
        applied_weight_doc=0.06,
    )
    logs.b(10, "s1", target_category="email", target_intensity="moderate", target_language="ko")
    logs.c(10, "s1", was_accepted=True, selected_option_index=1)
    logs.d(10, "s1", field="email", intensity="moderate", user_prompt="be polite", selected_index=1)

    result = run_etl(mongo, hour(10), now=NOW)

    assert result.flags == {"high": 1}
    assert example(mongo, "s1") == {
        "_id": "s1",
        "example_id": "s1",
        "recommend_session_id": "s1",
        "user_id": "u1",
        "doc_id": "doc-1",
        "context_hash": "h-s1",
        "source_recommend_event_id": "a-s1",
        "reco_category_input": "email",
        "reco_scores_vec": {"email": 0.6, "report": 0.4},
        "reco_scores_rule": {"email": 1.0},
        "reco_scores_doc": {"report": 1.0},
        "doc_maturity_score": 0.4,
        "applied_weight_doc": 0.06,
        "recommended_intensity": "weak",
        "context_embedding": [0.5] * 384,
        "embedding_version": "v1",
        "macro_category_hint": "report",
        "executed_target_category": "email",
        "executed_target_intensity": "moderate",
        "executed_target_language": "ko",
        "was_accepted": True,
        "selected_option_index": 1,
        "groundtruth_field": "email",
        "groundtruth_intensity": "moderate",
        "groundtruth_user_prompt": "be polite",
        "groundtruth_selected_index": 1,
        "final_category": "email",
        "final_intensity": "moderate",
        "match_metrics": {"is_category_match": True, "is_intensity_match": False, "match_score": 1},
        "consistency_flag": "high",
        "consistency_reasons": [],
        "created_at": DAY + timedelta(hours=10),
        "schema_version": "2.0",
    }


def test_a_session_without_b_c_d_takes_its_finals_from_a(mongo, logs):
    logs.e(10, "s1")
    logs.a(10, "s1", reco_category_input="thesis", reco_options=[])
    run_etl(mongo, hour(10), now=NOW)
    ex = example(mongo, "s1")
    assert (ex["was_accepted"], ex["selected_option_index"], ex["final_category"], ex["final_intensity"]) == (
        False,
        None,
        "thesis",
        None,
    )
    assert ex["macro_category_hint"] is None and ex["recommended_intensity"] is None
    assert ex["match_metrics"] == {"is_category_match": True, "is_intensity_match": None, "match_score": 1}
    assert ex["consistency_flag"] == "high"


# -- one test per consistency rule -------------------------------------------------------------


def _mismatch(logs):
    logs.full_session(10, "s1")
    logs.b(10, "s1", insert_id="b-other", source_recommend_event_id="a-someone-else", created_at=at(10, 0, 3))


def _time_gap(logs):
    logs.full_session(10, "s1", b={"created_at": at(10, 0, 8)})


def _time_order(logs):
    logs.full_session(10, "s1", c={"created_at": at(9, 59, 50)})


def _multiple_a(logs):
    logs.full_session(10, "s1")
    logs.a(10, "s1", insert_id="a-s1-second", created_at=at(10, 0, 1))


def _missing_context(logs):
    logs.a(10, "s1"), logs.b(10, "s1"), logs.c(10, "s1"), logs.d(10, "s1")


def _empty_embedding(logs):
    logs.full_session(10, "s1")
    logs.db.context_block.update_one({"_id": "h-s1"}, {"$set": {"embedding_v1": []}})


def _missing_run(logs):
    logs.e(10, "s1"), logs.a(10, "s1"), logs.c(10, "s1"), logs.d(10, "s1")


def _missing_ground_truth(logs):
    logs.e(10, "s1"), logs.a(10, "s1"), logs.b(10, "s1"), logs.c(10, "s1")


@pytest.mark.parametrize(
    "setup, reason",
    [
        (_mismatch, "source_mismatch"),
        (_time_gap, "time_gap"),
        (_time_order, "time_order"),
        (_multiple_a, "multiple_a"),
        (_missing_context, "missing_context"),
        (_empty_embedding, "missing_context"),
        (_missing_run, "missing_run"),
        (_missing_ground_truth, "missing_ground_truth"),
    ],
)
def test_each_consistency_rule_marks_the_example_low_with_its_reason(mongo, logs, setup, reason):
    setup(logs)
    run_etl(mongo, hour(10), now=NOW)
    ex = example(mongo, "s1")
    assert ex["consistency_flag"] == "low" and ex["consistency_reasons"] == [reason]


def test_source_mismatch_leaves_the_foreign_b_out_of_the_join(mongo, logs):
    _mismatch(logs)
    run_etl(mongo, hour(10), now=NOW)
    assert example(mongo, "s1")["executed_target_category"] == "email"  # from b-s1, not b-other (created later)
    assert example(mongo, "s1")["source_recommend_event_id"] == "a-s1"


def test_multiple_a_builds_from_the_earliest(mongo, logs):
    logs.full_session(10, "s1")
    logs.a(10, "s1", insert_id="a-earlier", created_at=at(9, 59), reco_category_input="report")
    run_etl(mongo, hour(10), now=NOW)
    ex = example(mongo, "s1")
    assert ex["source_recommend_event_id"] == "a-earlier" and ex["reco_category_input"] == "report"
    # The B and C point at the later A: they are left out as mismatched.
    assert set(ex["consistency_reasons"]) == {"multiple_a", "source_mismatch"}


def test_a_redelivered_a_is_one_record_not_multiple_a(mongo, logs):
    logs.full_session(10, "s1")
    run_etl(mongo, hour(10), now=NOW)  # the consumer's _id makes a redelivery impossible to store twice
    assert example(mongo, "s1")["consistency_flag"] == "high"


def test_outcome_contradiction_rejects_the_session_and_removes_its_earlier_example(mongo, logs):
    logs.e(10, "s1"), logs.a(10, "s1"), logs.b(10, "s1")
    run_etl(mongo, hour(10), now=NOW)
    assert example(mongo, "s1") is not None
    logs.c(11, "s1", was_accepted=False, selected_option_index=None)
    logs.d(11, "s1", selected_index=2)
    result = run_etl(mongo, hour(11), now=NOW)
    assert result.rejects == {"outcome_contradiction": 1}
    assert example(mongo, "s1") is None
    reject = mongo.etl_rejects.find_one({"_id": "s1"})
    assert reject["reason"] == "outcome_contradiction" and reject["correction_history_id"] == "d-s1"
    assert reject["insert_ids"] == ["a-s1", "c-s1"]


def test_orphans_are_recorded_and_cleared_once_their_a_arrives(mongo, logs):
    logs.b(10, "s9"), logs.c(10, "s9", was_accepted=False, correction_history_id=None)
    assert run_etl(mongo, hour(10), now=NOW).rejects == {"orphan": 1}
    orphan = mongo.etl_rejects.find_one({"_id": "s9"})
    assert orphan["reason"] == "orphan" and orphan["insert_ids"] == ["b-s9", "c-s9"]
    logs.e(12, "s9"), logs.a(12, "s9", created_at=at(10))  # the A arrives two hours late
    run_etl(mongo, hour(12), now=NOW)
    assert mongo.etl_rejects.find_one({"_id": "s9"}) is None
    assert example(mongo, "s9")["consistency_flag"] == "high"


def test_late_c_two_windows_later_updates_the_example_and_the_profile(mongo, logs, redis):
    logs.e(10, "s1"), logs.a(10, "s1"), logs.b(10, "s1")
    run_etl(mongo, hour(10), now=NOW)
    run_profile(mongo, redis, hour(10), now=NOW)
    assert example(mongo, "s1")["was_accepted"] is False
    assert mongo.user_profile.find_one({"_id": "u1"})["recommend_accept_rate"] == 0.0

    logs.c(12, "s1", created_at=at(10, 0, 10)), logs.d(12, "s1")
    assert run_etl(mongo, hour(11), now=NOW).touched == 0
    run_etl(mongo, hour(12), now=NOW)
    run_profile(mongo, redis, hour(12), now=NOW)
    assert example(mongo, "s1")["was_accepted"] is True
    assert mongo.user_profile.find_one({"_id": "u1"})["recommend_accept_rate"] == 1.0


def test_a_late_d_or_e_touches_the_session_that_points_at_it(mongo, logs):
    logs.a(10, "s1"), logs.b(10, "s1"), logs.c(10, "s1")
    run_etl(mongo, hour(10), now=NOW)
    assert set(example(mongo, "s1")["consistency_reasons"]) == {"missing_context", "missing_ground_truth"}
    logs.d(11, "s1")
    run_etl(mongo, hour(11), now=NOW)
    assert example(mongo, "s1")["consistency_reasons"] == ["missing_context"]
    logs.e(12, "s1")
    run_etl(mongo, hour(12), now=NOW)
    assert example(mongo, "s1")["consistency_flag"] == "high"


# -- profiles ------------------------------------------------------------------------------------


def test_profile_vectors_match_the_hand_computed_values(mongo, logs, redis):
    logs.e(10, "s1", embedding=[1.0] * 384)
    logs.e(10, "s4", embedding=[3.0] * 384)
    for s in ("s1", "s2", "s3", "s4"):
        logs.a(10, s, reco_category_input="thesis" if s == "s4" else "email")
    logs.b(10, "s1", target_category="email", target_intensity="weak", target_language="ko")
    logs.b(10, "s2", target_category="report", target_intensity="strong", target_language="en")
    logs.b(10, "s3", target_category="email", target_intensity="weak", target_language="xx")  # xx: not counted
    logs.c(10, "s1", was_accepted=True)  # +1 to s1's latest B: email, weak, ko
    logs.c(10, "s2", was_accepted=False)  # nothing
    logs.c(10, "s4", was_accepted=True)  # no B: +1 to A's category (thesis) only
    logs.b(10, "s5", user_id="u2")  # another user's record

    run_profile(mongo, redis, hour(10), now=NOW)

    p = mongo.user_profile.find_one({"_id": "u1"})
    # categories: thesis 1, report 1, email 3 (B1, B3, C1) of 5
    assert p["preferred_category_vector"] == [1 / 5, 1 / 5, 0.0, 3 / 5, 0.0, 0.0, 0.0]
    # intensities: weak 3 (B1, B3, C1), strong 1 (B2) of 4
    assert p["preferred_strength_vector"] == [3 / 4, 0.0, 1 / 4]
    # languages: ko 2 (B1, C1), en 1 (B2) of 3; xx is outside the vocabulary
    assert p["preferred_language_vector"] == [2 / 3, 1 / 3, 0.0, 0.0, 0.0]
    assert p["recommend_accept_rate"] == 2 / 4  # s1, s4 accepted of s1..s4
    assert p["paraphrase_execution_count"] == 3
    assert p["embedding_interaction_count"] == 2
    assert p["user_embedding_v1"] == [2.0] * 384  # mean of [1]*384 and [3]*384
    cached = json.loads(redis.get(REDIS_KEY.format(user_id="u1")))
    assert cached["preferred_category_vector"] == p["preferred_category_vector"]
    assert cached["recommend_accept_rate"] == 0.5 and redis.ttl("user_profile:u1") == -1  # no expiry
    other = mongo.user_profile.find_one({"_id": "u2"})
    assert other["paraphrase_execution_count"] == 1 and other["recommend_accept_rate"] == 0.0
    assert sum(other["preferred_category_vector"]) == pytest.approx(1.0)


def test_a_user_with_nothing_counted_gets_zero_vectors(mongo, logs, redis):
    logs.a(10, "s1", user_id="u3", reco_category_input=None)
    run_profile(mongo, redis, hour(10), now=NOW)
    p = mongo.user_profile.find_one({"_id": "u3"})
    assert p["preferred_category_vector"] == [0.0] * 7 and p["user_embedding_v1"] == []
    assert mongo.user_profile.count_documents({"_id": None}) == 0


# -- vectors -------------------------------------------------------------------------------------


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def test_real_points_equal_the_high_examples_and_synthetic_points_retire_per_category(settings, mongo, logs, qdrant):
    coll = settings.qdrant_collection
    vectorstore.seed_synthetic(qdrant, settings, per_category=3, threshold=2)
    for i, cat in enumerate(["email", "email", "report"]):
        logs.full_session(10, f"s{i}", d={"field": cat})
        logs.db.context_block.update_one({"_id": f"h-s{i}"}, {"$set": {"embedding_v1": [float(i + 1)] + [0.5] * 383}})
    _missing_ground_truth_for(logs, "s-low")
    run_etl(mongo, hour(10), now=NOW)

    summary = run_vectors(mongo, qdrant, hour(10), collection=coll, dim=384, threshold=2)

    high = {e["_id"]: e for e in mongo.training_examples.find({"consistency_flag": "high"})}
    assert len(high) == 3
    points = {
        str(p.id): p
        for p in qdrant.scroll(coll, scroll_filter=vectorstore.source_filter("real"), limit=100, with_vectors=True)[0]
    }
    assert set(points) == {vectorstore.point_id(s) for s in high}
    for s, ex in high.items():
        p = points[vectorstore.point_id(s)]
        assert p.vector == pytest.approx(_unit(ex["context_embedding"]), abs=1e-6)  # cosine stores unit vectors
        assert p.payload == {
            "example_id": s,
            "recommend_session_id": s,
            "user_id": "u1",
            "doc_id": "doc-1",
            "category": ex["final_category"],
            "intensity": "moderate",
            "language": "ko",
            "was_accepted": True,
            "source": "real",
            "created_at": int(ex["created_at"].timestamp()),
        }
    # email reached the threshold (2): its synthetic points are gone; report (1) keeps them.
    assert summary["synthetic_points"]["email"] == 0 and summary["synthetic_points"]["report"] == 3
    assert summary["real_points"]["email"] == 2

    # s0 turns low in a later window: it loses its point.
    logs.b(11, "s0", insert_id="b-foreign", source_recommend_event_id="a-other")
    run_etl(mongo, hour(11), now=NOW)
    run_vectors(mongo, qdrant, hour(11), collection=coll, dim=384, threshold=2)
    assert qdrant.retrieve(coll, [vectorstore.point_id("s0")]) == []
    assert vectorstore.count(qdrant, coll, "real") == 2


def _missing_ground_truth_for(logs, s):
    logs.e(10, s), logs.a(10, s), logs.b(10, s), logs.c(10, s)


def test_vectors_full_reconcile_removes_points_of_examples_that_no_longer_exist(settings, mongo, logs, qdrant):
    coll = settings.qdrant_collection
    logs.full_session(10, "s1")
    run_etl(mongo, hour(10), now=NOW)
    run_vectors(mongo, qdrant, hour(10), collection=coll, dim=384, threshold=20)
    mongo.training_examples.delete_many({})
    run_vectors(mongo, qdrant, hour(10), collection=coll, dim=384, threshold=20, full=True)
    assert vectorstore.count(qdrant, coll, "real") == 0


def test_vectors_full_sync_reports_the_points_qdrant_then_has(settings, mongo, logs, qdrant):
    """The full sync counts points from what it kept (no second pass over the collection): the counts must be Qdrant's."""
    coll = settings.qdrant_collection
    vectorstore.seed_synthetic(qdrant, settings, per_category=3, threshold=2)
    for i, cat in enumerate(["email", "email", "report"]):
        logs.full_session(10, f"s{i}", d={"field": cat})
    run_etl(mongo, hour(10), now=NOW)
    run_vectors(mongo, qdrant, hour(10), collection=coll, dim=384, threshold=5)
    mongo.training_examples.delete_one({"_id": "s1"})  # its point is now stale

    summary = run_vectors(mongo, qdrant, hour(10), collection=coll, dim=384, threshold=1, full=True)

    # A full run writes only what differs (pipeline.md, "Derived stores agree"): the two kept points are right already.
    assert summary["deleted"] == 1 and summary["upserted"] == 0
    for source, key in (("real", "real_points"), ("synthetic", "synthetic_points")):
        counted = vectorstore.counts_by_category(qdrant, coll, source)
        assert summary[key] == {c: counted.get(c, 0) for c in summary[key]}
    assert summary["real_points"]["email"] == 1 and summary["synthetic_points"]["email"] == 0
    assert summary["synthetic_points"]["thesis"] == 3  # no real point there: still seeded


# -- idempotency -------------------------------------------------------------------------------


def _points(qc, coll):
    pts = qc.scroll(coll, limit=1000, with_vectors=True)[0]
    return {str(p.id): (p.payload, [round(x, 6) for x in p.vector]) for p in pts}


def test_every_step_twice_and_an_old_window_rerun_after_newer_data_change_nothing(settings, mongo, logs, redis, qdrant):
    coll = settings.qdrant_collection
    for i in range(6):
        logs.full_session(10, f"s{i}", c={"was_accepted": i % 2 == 0})
    _mismatch_session(logs, "s-mis")
    logs.b(10, "s-orphan")

    def run_all(window):
        run_etl(mongo, window, now=NOW)
        run_profile(mongo, redis, window, now=NOW)
        run_vectors(mongo, qdrant, window, collection=coll, dim=384, threshold=20)

    def state():
        return (
            snapshot(mongo, "training_examples"),
            snapshot(mongo, "etl_rejects"),
            snapshot(mongo, "user_profile"),
            _points(qdrant, coll),
            {k: redis.get(k) for k in sorted(redis.keys("user_profile:*"))},
        )

    run_all(hour(10))
    first = state()
    run_all(hour(10))
    assert state()[:4] == first[:4]

    logs.c(11, "s1", insert_id="c-s1-late", was_accepted=True, created_at=at(10, 1))  # newer data for s1
    logs.d(11, "s1-late", correction_history_id="d-s1-late")
    run_all(hour(11))
    after_newer = state()
    run_all(hour(10))  # re-running the old window now sees the same records: same result
    assert state()[:4] == after_newer[:4]


def _mismatch_session(logs, s):
    logs.e(10, s), logs.a(10, s), logs.b(10, s, source_recommend_event_id="a-nope")


# -- failure half-way ----------------------------------------------------------------------------


def test_etl_failing_half_way_leaves_no_partial_output_and_the_retry_completes(settings, mongo, logs):
    for i in range(20):
        logs.full_session(10, f"s{i}")
    logs.b(10, "s-orphan")  # so the publish has a second write (rejects) after the examples
    admin = MongoClient(settings.mongo_uri).admin
    # The first insert (training_examples) goes through inside the transaction; the next one fails.
    admin.command(
        {"configureFailPoint": "failCommand", "mode": {"skip": 1}, "data": {"failCommands": ["insert"], "errorCode": 91}}
    )
    try:
        with pytest.raises(Exception, match="failCommand"):
            run_etl(mongo, hour(10), now=NOW)
    finally:
        admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert mongo.training_examples.count_documents({}) == 0
    assert mongo.etl_rejects.count_documents({}) == 0
    assert mongo.pipeline_runs.count_documents({}) == 0

    result = run_etl(mongo, hour(10), now=NOW)
    assert result.flags == {"high": 20}
    assert mongo.training_examples.count_documents({}) == 20 and mongo.etl_rejects.count_documents({}) == 1


def test_window_rules_are_settings(mongo, logs):
    logs.full_session(10, "s1", b={"created_at": at(10, 0, 8)})
    run_etl(mongo, hour(10), examples.Rules(time_gap=timedelta(seconds=10)), now=NOW)
    assert example(mongo, "s1")["consistency_flag"] == "high"


def test_full_rebuild_by_scan_equals_the_window_path(mongo):
    """`run etl --full` joins by scanning each collection once; it must decide exactly as the window path."""
    import orjson

    from consumer.records import Position
    from consumer.validate import Validator
    from sentencify.schemas import BY_NAME
    from sentencify.simulate import generate

    validator = Validator(384)
    for i, rec in enumerate(generate(300, seed=13, anomalies=0.4, start=DAY + timedelta(hours=9), hours=1)):
        if rec.expect_collection is None:
            continue
        doc = validator.validate(BY_NAME[rec.topic_suffix], orjson.loads(rec.value), Position("t", 0, i))
        doc["ingested_at"] = DAY + timedelta(hours=10, seconds=i % 3000)
        mongo[rec.topic_suffix].replace_one({"_id": doc["_id"]}, doc, upsert=True)

    by_window = run_etl(mongo, hour(10), now=NOW)
    window_state = (snapshot(mongo, "training_examples"), snapshot(mongo, "etl_rejects"))
    mongo.training_examples.delete_many({})
    mongo.etl_rejects.delete_many({})
    by_scan = run_etl(mongo, hour(10), now=NOW, full=True)

    assert (snapshot(mongo, "training_examples"), snapshot(mongo, "etl_rejects")) == window_state
    assert by_scan.flags == by_window.flags and by_scan.rejects == by_window.rejects
    assert by_window.rejects["orphan"] and by_window.rejects["outcome_contradiction"] and by_window.flags["low"]

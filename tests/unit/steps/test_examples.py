"""The consistency rules and example building of pipeline.md, Step 1, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from sentencify.schemas.derived import SCHEMA_VERSION
from sentencify.steps.examples import (
    Example,
    JoinedSession,
    Reject,
    Rules,
    build,
    check,
    earliest,
    in_force,
    latest,
    orphan,
    pick,
)

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RULES = Rules()


def a_record(**kw) -> dict:
    doc = {
        "insert_id": "a1",
        "recommend_session_id": "s1",
        "created_at": T0,
        "user_id": "u1",
        "doc_id": "doc1",
        "context_hash": "h1",
        "reco_category_input": "thesis",
        "reco_options": [{"strength": "moderate"}],
        "P_vec": {"thesis": 0.5},
        "P_rule": {"thesis": 0.3},
        "P_doc": {"thesis": 0.2},
        "doc_maturity_score": 0.4,
        "applied_weight_doc": 0.1,
    }
    return doc | kw


def b_record(**kw) -> dict:
    doc = {
        "insert_id": "b1",
        "recommend_session_id": "s1",
        "source_recommend_event_id": "a1",
        "created_at": T0 + timedelta(seconds=1),
        "target_category": "report",
        "target_intensity": "strong",
        "target_language": "en",
    }
    return doc | kw


def c_record(**kw) -> dict:
    doc = {
        "insert_id": "c1",
        "recommend_session_id": "s1",
        "source_recommend_event_id": "a1",
        "created_at": T0 + timedelta(seconds=2),
        "was_accepted": True,
        "selected_option_index": 0,
        "correction_history_id": "d1",
    }
    return doc | kw


def d_record(**kw) -> dict:
    doc = {"_id": "d1", "field": "article", "intensity": "weak", "user_prompt": "p", "selected_index": 0}
    return doc | kw


E = {"_id": "h1", "embedding_v1": [0.1, 0.2], "embedding_version": "v1"}
F = {"_id": "f1", "macro_category_hint": "academic"}


def session(*, a=None, a_ids=None, b=None, c=None, d=None, e=None, f=None) -> JoinedSession:
    a = a or a_record()
    return JoinedSession(
        _id="s1",
        a=a,
        a_ids=a_ids if a_ids is not None else [a["insert_id"]],
        b=[b_record()] if b is None else b,
        c=[c_record()] if c is None else c,
        d=[d_record()] if d is None else d,
        e=[E] if e is None else e,
        f=[F] if f is None else f,
    )


def reasons(s: JoinedSession) -> list[str]:
    result = build(s, RULES, NOW)
    assert isinstance(result, Example)
    return result.doc["consistency_reasons"]


def test_a_complete_session_is_high_with_every_field() -> None:
    doc = build(session(), RULES, NOW)
    assert isinstance(doc, Example)
    h = doc.doc
    assert h["_id"] == h["example_id"] == h["recommend_session_id"] == "s1"
    assert (h["user_id"], h["doc_id"], h["context_hash"], h["source_recommend_event_id"]) == ("u1", "doc1", "h1", "a1")
    assert (h["reco_scores_vec"], h["reco_scores_rule"], h["reco_scores_doc"]) == (
        {"thesis": 0.5},
        {"thesis": 0.3},
        {"thesis": 0.2},
    )
    assert h["recommended_intensity"] == "moderate"
    assert (h["context_embedding"], h["embedding_version"], h["macro_category_hint"]) == ([0.1, 0.2], "v1", "academic")
    assert (h["executed_target_category"], h["executed_target_intensity"], h["executed_target_language"]) == (
        "report",
        "strong",
        "en",
    )
    assert (h["was_accepted"], h["selected_option_index"]) == (True, 0)
    assert (h["groundtruth_field"], h["groundtruth_intensity"], h["groundtruth_selected_index"]) == ("article", "weak", 0)
    assert (h["final_category"], h["final_intensity"]) == ("article", "weak")  # D wins over B
    assert h["match_metrics"] == {"is_category_match": False, "is_intensity_match": False, "match_score": 0}
    assert (h["consistency_flag"], h["consistency_reasons"]) == ("high", [])
    assert (h["created_at"], h["processed_at"], h["schema_version"]) == (T0, NOW, SCHEMA_VERSION)


def test_final_values_fall_back_from_d_to_b_to_a() -> None:
    h = build(session(d=[], c=[c_record(correction_history_id=None)]), RULES, NOW).doc
    assert (h["final_category"], h["final_intensity"]) == ("report", "strong")
    h = build(session(b=[], c=[], d=[]), RULES, NOW).doc
    assert (h["final_category"], h["final_intensity"]) == ("thesis", None)
    assert h["match_metrics"] == {"is_category_match": True, "is_intensity_match": None, "match_score": 1}
    assert h["was_accepted"] is False and h["selected_option_index"] is None


def test_no_reco_options_means_no_recommended_intensity() -> None:
    h = build(session(a=a_record(reco_options=[])), RULES, NOW).doc
    assert h["recommended_intensity"] is None
    assert h["match_metrics"]["is_intensity_match"] is None


def test_source_mismatch_leaves_the_other_a_out_of_the_join() -> None:
    other_b = b_record(insert_id="b2", source_recommend_event_id="a9", created_at=T0 + timedelta(seconds=3))
    s = session(b=[b_record(), other_b])
    assert reasons(s) == ["source_mismatch"]
    assert build(s, RULES, NOW).doc["executed_target_category"] == "report"  # the matching B, though later is other
    assert reasons(session(c=[c_record(source_recommend_event_id="a9")])) == ["source_mismatch"]  # C left out: no missing_run


def test_time_gap_either_side_and_its_threshold() -> None:
    assert reasons(session(b=[b_record(created_at=T0 + timedelta(seconds=6))])) == ["time_gap"]
    assert reasons(session(b=[b_record(created_at=T0 - timedelta(seconds=6))])) == ["time_gap"]
    assert reasons(session(b=[b_record(created_at=T0 + timedelta(seconds=5))])) == []  # "more than 5 s"
    assert check(session(), pick(session(b=[b_record(created_at=T0 + timedelta(seconds=2))])), Rules(timedelta(seconds=1))) == [
        "time_gap"
    ]


def test_time_order() -> None:
    assert reasons(session(c=[c_record(created_at=T0 - timedelta(seconds=1))])) == ["time_order"]


def test_multiple_a() -> None:
    assert reasons(session(a_ids=["a1", "a2"])) == ["multiple_a"]
    assert reasons(session(a_ids=["a1", "a1"])) == []  # a redelivered A is one record


def test_missing_context() -> None:
    assert reasons(session(e=[])) == ["missing_context"]
    assert reasons(session(e=[{"_id": "h1", "embedding_v1": []}])) == ["missing_context"]


def test_missing_run() -> None:
    assert reasons(session(b=[])) == ["missing_run"]
    assert reasons(session(b=[], c=[])) == []  # no C: nothing ran, nothing missing


def test_missing_ground_truth() -> None:
    assert reasons(session(d=[])) == ["missing_ground_truth"]
    assert reasons(session(d=[], c=[c_record(was_accepted=False, correction_history_id=None)])) == []


def test_reasons_come_in_the_contracts_order() -> None:
    s = session(
        a_ids=["a1", "a2"],
        b=[b_record(source_recommend_event_id="a9")],
        c=[c_record(created_at=T0 - timedelta(seconds=1))],
        d=[],
        e=[],
    )
    assert reasons(s) == [
        "source_mismatch",
        "time_order",
        "multiple_a",
        "missing_context",
        "missing_run",
        "missing_ground_truth",
    ]
    assert build(s, RULES, NOW).doc["consistency_flag"] == "low"


def test_outcome_contradiction_is_a_reject_not_an_example() -> None:
    s = session(c=[c_record(was_accepted=False, insert_id="c7")], d=[d_record(selected_index=2)])
    result = build(s, RULES, NOW)
    assert isinstance(result, Reject)
    assert result.doc == {
        "_id": "s1",
        "recommend_session_id": "s1",
        "reason": "outcome_contradiction",
        "insert_ids": ["a1", "c7"],
        "correction_history_id": "d1",
        "source_recommend_event_id": "a1",
        "detected_at": NOW,
    }
    # a null selected_index is no contradiction
    assert isinstance(build(session(c=[c_record(was_accepted=False)], d=[d_record(selected_index=None)]), RULES, NOW), Example)


def test_orphan() -> None:
    b = [b_record(insert_id="b2"), b_record(insert_id="b1")]
    c = [c_record(insert_id="c1")]
    r = orphan("s1", b, c, NOW)
    assert r.doc == {
        "_id": "s1",
        "recommend_session_id": "s1",
        "reason": "orphan",
        "insert_ids": ["b1", "b2", "c1"],
        "correction_history_id": None,
        "source_recommend_event_id": "a1",
        "detected_at": NOW,
    }
    assert orphan("s2", [], [c_record(source_recommend_event_id="a5")], NOW).doc["source_recommend_event_id"] == "a5"


def test_pick_takes_the_latest_answering_b_and_c_and_cs_d() -> None:
    b_late = b_record(insert_id="b2", created_at=T0 + timedelta(seconds=4), target_category="thesis")
    c_late = c_record(insert_id="c2", created_at=T0 + timedelta(seconds=4), correction_history_id="d2")
    p = pick(session(b=[b_record(), b_late], c=[c_late, c_record()], d=[d_record(), d_record(_id="d2", field="report")]))
    assert (p.b["insert_id"], p.c["insert_id"], p.d["_id"]) == ("b2", "c2", "d2")
    assert (p.e, p.f, p.mismatched) == (E, F, False)
    assert pick(session(e=[], f=[])).e is None


# --- pick's helpers: properties over open-ended records --------------------------------------------------

times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
records = st.lists(
    st.fixed_dictionaries({"created_at": times, "insert_id": st.text(min_size=1, max_size=4)}), min_size=1, max_size=8
)


@given(records)
def test_latest_and_earliest_are_the_max_and_min_by_time_then_insert_id(rs: list[dict]) -> None:
    keys = sorted((r["created_at"], r["insert_id"]) for r in rs)
    lt, er = latest(rs), earliest(rs)
    assert (lt["created_at"], lt["insert_id"]) == keys[-1]
    assert (er["created_at"], er["insert_id"]) == keys[0]
    # order of arrival does not matter (deterministic ties)
    assert latest(list(reversed(rs))) == lt and earliest(list(reversed(rs))) == er


def test_latest_of_nothing_is_none() -> None:
    assert latest([]) is None


analyses = st.lists(
    st.fixed_dictionaries(
        {"_id": st.text(min_size=1, max_size=3), "last_updated": times, "valid_until": st.one_of(st.none(), times)}
    ),
    max_size=6,
)


@given(analyses, times)
def test_in_force_never_leaks_a_later_or_expired_analysis(fs: list[dict], at: datetime) -> None:
    chosen = in_force(fs, at)
    valid = [f for f in fs if f["last_updated"] <= at and (f["valid_until"] is None or f["valid_until"] >= at)]
    if not valid:
        assert chosen is None
        return
    assert chosen in valid
    assert (chosen["last_updated"], chosen["_id"]) == max((f["last_updated"], f["_id"]) for f in valid)


flags = st.booleans()


@given(
    gap=st.integers(min_value=-30, max_value=30),
    c_delta=st.integers(min_value=-30, max_value=30),
    with_b=flags,
    with_c=flags,
    accepted=flags,
    with_d=flags,
    selected=st.one_of(st.none(), st.integers(0, 3)),
    with_e=flags,
    two_a=flags,
)
def test_any_session_is_exactly_one_verdict(gap, c_delta, with_b, with_c, accepted, with_d, selected, with_e, two_a) -> None:
    s = session(
        a_ids=["a1", "a2"] if two_a else ["a1"],
        b=[b_record(created_at=T0 + timedelta(seconds=gap))] if with_b else [],
        c=[c_record(created_at=T0 + timedelta(seconds=c_delta), was_accepted=accepted)] if with_c else [],
        d=[d_record(selected_index=selected)] if with_d else [],
        e=[E] if with_e else [],
    )
    result = build(s, RULES, NOW)
    contradiction = with_c and not accepted and with_d and selected is not None
    assert isinstance(result, Reject) == contradiction
    if contradiction:
        return
    expected = [
        *(["time_gap"] if with_b and abs(gap) > 5 else []),
        *(["time_order"] if with_c and c_delta < 0 else []),
        *(["multiple_a"] if two_a else []),
        *([] if with_e else ["missing_context"]),
        *(["missing_run"] if with_c and not with_b else []),
        *(["missing_ground_truth"] if with_c and accepted and not with_d else []),
    ]
    assert result.doc["consistency_reasons"] == expected
    assert result.doc["consistency_flag"] == ("low" if expected else "high")

"""The profile formula of pipeline.md, Step 2 (sentencify/steps/profiles.py `build_profile`), on hand-built records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentencify.schemas import CATEGORIES, INTENSITIES, LANGUAGES
from sentencify.schemas.derived import SCHEMA_VERSION
from sentencify.steps.profiles import UserRecords, build_profile

NOW = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def b(session: str, cat="thesis", inten="weak", lang="ko") -> dict:
    return {"recommend_session_id": session, "target_category": cat, "target_intensity": inten, "target_language": lang}


def c(session: str, accepted: bool | None = True) -> dict:
    return {"recommend_session_id": session, "was_accepted": accepted}


def records(**kw) -> UserRecords:
    base = {"b": [], "c": [], "a_sessions": set(), "latest_b": {}, "reco_category": {}, "embedding": {}}
    return UserRecords(**(base | kw))


def test_the_formula() -> None:
    rec = records(
        b=[b("s1"), b("s2", "report", "strong", "en"), b("s3", "nonsense", None, "xx")],
        c=[c("s1"), c("s2", False), c("s4"), c("s5", None)],
        a_sessions={"s1", "s2", "s4", "s6"},
        latest_b={"s1": b("s1", "report", "moderate", "ja")},
        reco_category={"s4": "article"},
        embedding={"s1": [1.0, 2.0], "s4": [3.0, 4.0], "s2": [9.0, 9.0]},
    )
    p = build_profile("u1", rec, NOW)
    cat = [0.0] * len(CATEGORIES)
    cat[CATEGORIES.index("thesis")] = 1
    cat[CATEGORIES.index("report")] = 2  # s2's B, s1's accepted latest B
    cat[CATEGORIES.index("article")] = 1  # s4: accepted, no B -> A's category (category only)
    assert p["preferred_category_vector"] == [x / 4 for x in cat]  # "nonsense" is not counted
    assert p["preferred_strength_vector"] == [1 / 3, 1 / 3, 1 / 3]  # weak, strong, and s1's run's moderate
    lang = [0.0] * len(LANGUAGES)
    for code in ("ko", "en", "ja"):
        lang[LANGUAGES.index(code)] = 1 / 3
    assert p["preferred_language_vector"] == lang
    assert p["recommend_accept_rate"] == 2 / 4  # s1, s4 accepted of four sessions with an A
    assert p["paraphrase_execution_count"] == 3
    assert p["embedding_interaction_count"] == 2
    assert p["user_embedding_v1"] == [2.0, 3.0]
    assert (p["_id"], p["user_id"], p["schema_version"]) == ("u1", "u1", SCHEMA_VERSION)
    assert p["updated_at"] == NOW.replace(microsecond=123000)  # milliseconds, as MongoDB keeps it


def test_an_empty_user_is_all_zeros() -> None:
    p = build_profile("u", records(), NOW)
    assert p["preferred_category_vector"] == [0.0] * 7
    assert p["preferred_strength_vector"] == [0.0] * 3
    assert p["preferred_language_vector"] == [0.0] * 5
    assert (p["recommend_accept_rate"], p["user_embedding_v1"], p["embedding_interaction_count"]) == (0.0, [], 0)


def test_an_accepted_orphan_is_not_part_of_the_rate() -> None:
    assert build_profile("u", records(c=[c("s9")], a_sessions={"s1"}), NOW)["recommend_accept_rate"] == 0.0


def test_non_finite_embeddings_are_no_embedding_and_lengths_must_agree() -> None:
    rec = records(c=[c("s1"), c("s2")], embedding={"s1": [float("nan"), 1.0], "s2": [1.0, 1.0]})
    assert build_profile("u", rec, NOW)["user_embedding_v1"] == [1.0, 1.0]
    with pytest.raises(ValueError):
        build_profile("u", records(c=[c("s1"), c("s2")], embedding={"s1": [1.0], "s2": [1.0, 2.0]}), NOW)


vocab_or_not = st.one_of(st.sampled_from(CATEGORIES + INTENSITIES + LANGUAGES), st.none(), st.text(max_size=3))


@given(
    st.lists(st.tuples(vocab_or_not, vocab_or_not, vocab_or_not), max_size=20),
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from([True, False, None])), max_size=10),
    st.sets(st.integers(0, 5)),
)
def test_vectors_are_distributions_and_the_rate_a_fraction(bs, cs, with_a) -> None:
    rec = records(
        b=[b(f"s{i}", *t) for i, t in enumerate(bs)],
        c=[c(f"s{s}", acc) for s, acc in cs],
        a_sessions={f"s{s}" for s in with_a},
    )
    p = build_profile("u", rec, NOW)
    for key, size in (("preferred_category_vector", 7), ("preferred_strength_vector", 3), ("preferred_language_vector", 5)):
        v = p[key]
        assert len(v) == size and all(0 <= x <= 1 for x in v)
        assert sum(v) == pytest.approx(1.0) or sum(v) == 0
    assert 0 <= p["recommend_accept_rate"] <= 1
    assert p["paraphrase_execution_count"] == len(bs)

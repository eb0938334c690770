"""Drift counting and the census comparison (sentencify/steps/drift.py, census.py), and the hour facts' pure rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from sentencify.steps import census, views
from sentencify.steps.drift import KINDS, SAMPLES, Drift, pages


@given(st.lists(st.tuples(st.sampled_from(KINDS), st.lists(st.integers(), max_size=8)), max_size=10))
def test_drift_counts_everything_and_keeps_the_first_samples(adds: list[tuple[str, list[int]]]) -> None:
    d = Drift("s")
    for kind, ids in adds:
        d.add(kind, iter(ids))  # any iterable, consumed once
    for kind in KINDS:
        every = [str(i) for k, ids in adds if k == kind for i in ids]
        assert getattr(d, kind) == len(every)
        assert d.samples[kind] == every[:SAMPLES]
    assert d.total == sum(len(ids) for _, ids in adds)
    assert d.agrees == (d.total == 0)


def test_drift_as_dict_and_line() -> None:
    d = Drift("user_profile")
    assert d.line() == "user_profile: agrees"
    assert d.as_dict() == {"store": "user_profile", "missing": 0, "extra": 0, "different": 0, "samples": {}}
    d.add("missing", ["u1", "u2", "u3", "u4"])
    d.add("different", [7])
    assert d.line() == "user_profile: 4 missing (e.g. u1, u2, u3); 1 different (e.g. 7)"
    assert d.as_dict()["samples"] == {"missing": ["u1", "u2", "u3", "u4"], "different": ["7"]}


@given(st.lists(st.integers(), max_size=50), st.integers(min_value=1, max_value=7))
def test_pages_chunk_in_order_and_never_exceed_size(items: list[int], size: int) -> None:
    got = list(pages(iter(items), size))
    assert [x for p in got for x in p] == items
    assert all(1 <= len(p) <= size for p in got)
    assert all(len(p) == size for p in got[:-1])


def test_census_differences() -> None:
    assert census.differences("etl", {"training_examples": 3}, {"training_examples": 3}) == []
    assert census.differences("etl", None, {"training_examples": 0, "etl_rejects": 2, "marker": "x"}) == [
        "no census recorded, but etl_rejects holds 2"
    ]
    assert census.differences("etl", {"training_examples": 3}, {"training_examples": 1}) == [
        "training_examples: 1 now, 3 when the step last left it"
    ]
    assert census.differences("profile", {"marker": "t"}, {"marker": None}) == [
        "marker: absent now, t when the step last left it"
    ]


def test_census_settled_and_evictions() -> None:
    was = {"settled": {"a": 10, "b": 5}, "settled_before": "t1", "evicted_keys": 4}
    assert census.differences("etl", was, {"settled": {"a": 8, "b": 6, "new": 1}, "settled_before": "t2", "evicted_keys": 4}) == [
        "a: 2 raw records removed"
    ]
    assert census.differences("etl", was, {"settled": None, "evicted_keys": None}) == []  # not measurable this time
    assert census.differences("profile", was, {"evicted_keys": 9}) == ["Redis evicted 5 keys (maxmemory)"]
    assert census.differences("profile", was, {"evicted_keys": 1}) == ["Redis evicted some keys (maxmemory)"]


def test_redis_marker_key_is_per_database() -> None:
    assert census.redis_marker_key("db1") == "sentencify:store_marker:db1:user_profile"


def test_canonical_rows_are_utc_with_tuples() -> None:
    t = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=9)))
    assert views._canonical(("k", t, [1, 2], None, 1.5)) == ("k", datetime(2026, 1, 1, 3, tzinfo=UTC), (1, 2), None, 1.5)


class _Checks:
    def __init__(self, docs: list[dict]) -> None:
        self.docs = docs

    def find(self, query: dict, sort: list) -> list[dict]:
        return sorted(self.docs, key=lambda d: d["_id"])


def test_store_agreement_rows() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    docs = [
        {
            "_id": "vectors",
            "step": "vectors",
            "found": {"missing": 2, "samples": {"missing": ["x", "y"], "extra": ["z"]}},
            "repaired": True,
            "agrees": True,
            "checked_at": at,
            "agreed_at": at,
        },
        {"_id": "fact_hours", "checked_at": at},
    ]
    rows = views.store_agreement({census.CHECKS: _Checks(docs)})  # type: ignore[arg-type]
    # the columns sql_views' store_agreement keeps whatever else it shows: key, step, counts first;
    # repaired, agrees, checked_at, agreed_at last
    assert [(r[:5], r[-4:]) for r in rows] == [
        (("fact_hours", "", 0, 0, 0), (False, False, at, None)),
        (("vectors", "vectors", 2, 0, 0), (True, True, at, at)),
    ]

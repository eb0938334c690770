"""The join's aggregation pipeline has the shape its docstring promises (sentencify/steps/join.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sentencify.steps import join
from sentencify.steps.touched import B, C, D, E

MATCH = {"recommend_session_id": {"$in": ["s1"]}}


def lookups(stages: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every `$lookup` spec, however deeply nested in sub-pipelines."""
    for stage in stages:
        if "$lookup" in stage:
            spec = stage["$lookup"]
            yield spec
            yield from lookups(spec.get("pipeline") or [])


def test_stages_in_order() -> None:
    stages = join.pipeline(MATCH)
    assert [next(iter(s)) for s in stages] == ["$match", "$group", "$lookup", "$lookup", "$lookup", "$lookup"]
    assert stages[0] == {"$match": MATCH}
    assert [s["$lookup"]["as"] for s in stages[2:]] == ["f", "b", "c", "e"]  # E last: the largest part


def test_every_lookup_is_the_concise_form() -> None:
    specs = list(lookups(join.pipeline({})))
    assert {s["from"] for s in specs} == {join.F, B, C, D, E}
    for spec in specs:
        assert spec["localField"] and spec["foreignField"], spec
        for stage in spec.get("pipeline") or []:
            assert set(stage) <= {"$match", "$group", "$replaceWith", "$sort", "$limit", "$project", "$lookup"}


def test_the_keys_each_part_is_joined_on() -> None:
    on = {s["as"]: (s["from"], s["localField"], s["foreignField"]) for s in lookups(join.pipeline({}))}
    assert on == {
        "f": (join.F, "a.doc_id", "doc_id"),
        "b": (B, "_id", "recommend_session_id"),
        "c": (C, "_id", "recommend_session_id"),
        "d": (D, "correction_history_id", "_id"),
        "e": (E, "a.context_hash", "_id"),
    }


def test_group_keeps_the_earliest_a_and_the_a_id_range() -> None:
    group = join.pipeline({})[1]["$group"]
    assert group["_id"] == "$recommend_session_id"
    assert group["a"]["$top"]["sortBy"] == {"created_at": 1, "insert_id": 1}
    assert set(group["a"]["$top"]["output"]) == {"_id", *join.A_FIELDS}
    assert (group["a_min"], group["a_max"]) == ({"$min": "$insert_id"}, {"$max": "$insert_id"})


def test_f_is_point_in_time_and_bounded() -> None:
    f = join.pipeline({})[2]["$lookup"]
    assert f["let"] == {"at": "$a.created_at"}
    assert f["pipeline"][1:] == [
        {"$sort": {"last_updated": -1, "_id": -1}},
        {"$limit": 1},
        {"$project": {"macro_category_hint": 1}},
    ]


def test_b_and_c_keep_at_most_two_records_each() -> None:
    stages = join.pipeline({})
    for spec in (stages[3]["$lookup"], stages[4]["$lookup"]):
        group = spec["pipeline"][0]["$group"]
        assert group["_id"] == {"$eq": ["$source_recommend_event_id", "$$a"]}  # two groups: answers A, or not
        assert group["r"]["$top"]["sortBy"] == {"created_at": -1, "insert_id": -1}


def test_joined_lifts_d_out_of_its_c() -> None:
    doc = {
        "_id": "s1",
        "a": {"insert_id": "a1"},
        "a_min": "a1",
        "a_max": "a2",
        "b": [],
        "c": [{"insert_id": "c1", "d": [{"_id": "d1"}]}, {"insert_id": "c2", "d": []}],
        "e": [],
        "f": [],
    }
    s = join._joined(doc)
    assert s["a_ids"] == ["a1", "a2"] and s["d"] == [{"_id": "d1"}]
    assert all("d" not in c for c in s["c"])

"""The ETL's aggregation pipeline (sentencify.steps.join) against a plain-Python reference join.

Differential: hypothesis draws sessions with every mix of missing, duplicated (redelivered),
late, mismatched (B/C answering another A) and contradictory records, several A per session,
shared documents and contexts, F analyses in and out of force; the pipeline's joined sessions
(window path and full rebuild) must equal `reference_join` below, record for record, and so must
the examples and rejects `examples.build` makes from them. Plus: `explain` shows every join of the
pipeline uses an index.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import bson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.errors import DuplicateKeyError

from sentencify import mongo as mongo_mod
from sentencify.steps import examples, join
from sentencify.steps.touched import A, B, C, D, E

F = join.F
T0 = datetime(2026, 11, 1, 10, tzinfo=UTC)
NOW = datetime(2026, 11, 2, tzinfo=UTC)


# -- the reference: the join written plainly over lists of records ---------------------------------


def reference_join(records: dict[str, list[dict]]) -> tuple[dict[str, dict], dict[str, tuple[set, set]]]:
    """session -> {a, a_ids, b, c, d, e, f} (ids), and orphan session -> (B ids, C ids).

    Straight from pipeline.md Step 1: the earliest A by (created_at, insert_id); of the session's B
    and of its C, the latest (by created_at, insert_id) answering A and the latest answering another
    A (what `examples.pick` needs); the D of those C's correction_history_id; the E of
    A.context_hash; the latest F (by last_updated, then _id) of A.doc_id with last_updated <=
    A.created_at and valid_until unset or >= A.created_at."""
    sessions = {r["recommend_session_id"] for code in (A, B, C) for r in records[code]}
    d_ids = {d["_id"] for d in records[D]}
    e_by = {e["_id"]: e for e in records[E]}
    joined, orphans = {}, {}
    for s in sessions:
        a_all = [r for r in records[A] if r["recommend_session_id"] == s]
        b_all = [r for r in records[B] if r["recommend_session_id"] == s]
        c_all = [r for r in records[C] if r["recommend_session_id"] == s]
        if not a_all:
            orphans[s] = ({r["_id"] for r in b_all}, {r["_id"] for r in c_all})
            continue
        a = min(a_all, key=lambda r: (r["created_at"], r["insert_id"]))
        b, c = _latest_per_answer(b_all, a), _latest_per_answer(c_all, a)
        at = a["created_at"]
        in_force = [
            f
            for f in records[F]
            if f["doc_id"] == a["doc_id"] and f["last_updated"] <= at and (f.get("valid_until") is None or f["valid_until"] >= at)
        ]
        f = max(in_force, key=lambda f: (f["last_updated"], f["_id"]), default=None)
        joined[s] = {
            "a": a["_id"],
            "a_ids": sorted({min(r["insert_id"] for r in a_all), max(r["insert_id"] for r in a_all)}),
            "b": {r["_id"] for r in b},
            "c": {r["_id"] for r in c},
            "d": {r.get("correction_history_id") for r in c} & d_ids,
            "e": {a["context_hash"]} & set(e_by),
            "f": None if f is None else (f["_id"], f.get("macro_category_hint")),
        }
    return joined, orphans


def _latest_per_answer(records: list[dict], a: dict) -> list[dict]:
    out = []
    for answers_a in (True, False):
        mine = [r for r in records if (r["source_recommend_event_id"] == a["insert_id"]) is answers_a]
        if mine:
            out.append(max(mine, key=lambda r: (r["created_at"], r["insert_id"])))
    return out


def as_ids(joined: list[examples.JoinedSession]) -> dict[str, dict]:
    return {
        j["_id"]: {
            "a": j["a"]["_id"],
            "a_ids": j["a_ids"],
            "b": {r["_id"] for r in j["b"]},
            "c": {r["_id"] for r in j["c"]},
            "d": {r["_id"] for r in j["d"]},
            "e": {r["_id"] for r in j["e"]},
            "f": None if not j["f"] else (j["f"][0]["_id"], j["f"][0].get("macro_category_hint")),
        }
        for j in joined
    }


# -- random sessions ---------------------------------------------------------------------------------

SESSIONS = [f"s{i}" for i in range(4)]
DOCS = ["doc-1", "doc-2"]
HASHES = ["h-1", "h-2", "h-3"]  # h-3 never has an E: missing context
CORRECTIONS = ["d-1", "d-2", "d-3", None]  # d-3 never has a D: missing ground truth
# Few distinct times, so ties (broken by insert_id / _id) and the 5 s time_gap boundary come up often.
seconds = st.sampled_from([-31, -6, -5, 0, 5, 6, 30]).map(lambda s: T0 + timedelta(seconds=s))
late = st.integers(min_value=0, max_value=3).map(lambda h: T0 + timedelta(hours=h))


@st.composite
def logs(draw) -> dict[str, list[dict]]:
    """Records of up to four sessions: each record kind may be missing, repeated or late."""
    a_ids = [f"a-{i}" for i in range(draw(st.integers(0, 6)))]
    out: dict[str, list[dict]] = {code: [] for code in (A, B, C, D, E, F)}
    for i in a_ids:
        out[A].append(
            {
                "_id": i,
                "insert_id": i,
                "recommend_session_id": draw(st.sampled_from(SESSIONS)),
                "doc_id": draw(st.sampled_from(DOCS)),
                "context_hash": draw(st.sampled_from(HASHES)),
                "created_at": draw(seconds),
                "reco_category_input": "email",
                "reco_options": draw(st.sampled_from([[], [{"category": "email", "strength": "weak", "score": 0.5}]])),
                "ingested_at": draw(late),
            }
        )
    answers = st.sampled_from([*a_ids, "a-foreign"])  # a B or C may answer another A: source_mismatch
    for code, n in ((B, draw(st.integers(0, 5))), (C, draw(st.integers(0, 5)))):
        for k in range(n):
            r = {
                "_id": f"{code[7:10]}-{k}",
                "insert_id": f"{code[7:10]}-{k}",
                "recommend_session_id": draw(st.sampled_from(SESSIONS)),  # a session with no A: an orphan
                "source_recommend_event_id": draw(answers),
                "created_at": draw(seconds),
                "ingested_at": draw(late),
            }
            if code == B:
                r["target_category"] = draw(st.sampled_from(["email", "report", None]))
                r["target_intensity"] = draw(st.sampled_from(["weak", "strong", None]))
            else:
                r["was_accepted"] = draw(st.booleans())
                r["correction_history_id"] = draw(st.sampled_from(CORRECTIONS))
                r["selected_option_index"] = draw(st.sampled_from([None, 0, 1]))
            out[code].append(r)
    for d in draw(st.lists(st.sampled_from(CORRECTIONS[:2]), unique=True)):
        # a selected_index on a not-accepted C's D is the contradiction
        out[D].append({"_id": d, "field": "report", "intensity": "weak", "selected_index": draw(st.sampled_from([None, 1]))})
    for h in draw(st.lists(st.sampled_from(HASHES[:2]), unique=True)):
        out[E].append(
            {"_id": h, "doc_id": "doc-1", "embedding_v1": draw(st.sampled_from([[], [0.5, 0.25]])), "embedding_version": "v1"}
        )
    for k in range(draw(st.integers(0, 5))):
        f = {
            "_id": f"f-{k}",
            "insert_id": f"f-{k}",
            "doc_id": draw(st.sampled_from(DOCS)),
            "last_updated": draw(seconds),
            "macro_category_hint": f"hint-{k}",
        }
        valid_until = draw(st.sampled_from(["absent", None, "before", "after", "same"]))
        if valid_until != "absent":
            f["valid_until"] = {
                None: None,
                "before": T0 - timedelta(seconds=30),
                "after": T0 + timedelta(seconds=30),
                "same": T0,
            }[valid_until]
        out[F].append(f)
    return out


def store(db, records: dict[str, list[dict]], redeliver: list[int], rnd) -> None:
    """Stored as the consumer does, in any order; `redeliver`: records sent twice (the same key is
    one record)."""
    for code, docs in records.items():
        docs = rnd.sample(docs, len(docs))  # arrival order decides nothing
        db[code].delete_many({})
        if docs:
            db[code].insert_many(docs)
        for i in redeliver:
            if i < len(docs):
                with contextlib.suppress(DuplicateKeyError):
                    db[code].insert_one(docs[i])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(records=logs(), redeliver=st.lists(st.integers(0, 5), max_size=3), rnd=st.randoms(use_true_random=False))
def test_the_pipeline_joins_exactly_as_the_plain_reference(mongo, records, redeliver, rnd):
    mongo_mod.ensure_indexes(mongo)
    store(mongo, records, redeliver, rnd)
    expected, expected_orphans = reference_join(records)

    for joined, orphans in (join.gather(mongo, SESSIONS), join.gather_all(mongo)):
        assert as_ids(joined) == expected
        assert {s: ({r["_id"] for r in b}, {r["_id"] for r in c}) for s, (b, c) in orphans.items()} == expected_orphans
        # and what the rules make of them: the same examples and rejects, field for field
        by_id = {r["_id"]: r for code in (A, B, C, D, E, F) for r in records[code]}
        built = {j["_id"]: examples.build(j, examples.Rules(), NOW).doc for j in joined}
        for s, ids in expected.items():
            # built from EVERY record of the session: what the pipeline leaves out changes nothing
            of = [r for r in records[C] if r["recommend_session_id"] == s]
            reference = examples.JoinedSession(
                _id=s,
                a=by_id[ids["a"]],
                a_ids=sorted({r["insert_id"] for r in records[A] if r["recommend_session_id"] == s}),
                b=[r for r in records[B] if r["recommend_session_id"] == s],
                c=of,
                d=[d for d in records[D] if d["_id"] in {r.get("correction_history_id") for r in of}],
                e=[by_id[x] for x in ids["e"]],
                f=[] if ids["f"] is None else [by_id[ids["f"][0]]],
            )
            assert built[s] == examples.build(reference, examples.Rules(), NOW).doc


# -- explain: every join is an index seek -------------------------------------------------------


def _lookups(stages: list[dict]):
    """Every `$lookup` of a pipeline, nested ones included."""
    for stage in stages:
        if "$lookup" in stage:
            yield stage["$lookup"]
            yield from _lookups(stage["$lookup"].get("pipeline", []))


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_explain_shows_every_join_of_the_pipeline_uses_an_index(mongo):
    mongo_mod.ensure_indexes(mongo)
    mongo[A].insert_one(
        {"_id": "a1", "insert_id": "a1", "recommend_session_id": "s1", "doc_id": "d", "context_hash": "h", "created_at": T0}
    )
    stages = join.pipeline({"recommend_session_id": {"$in": ["s1"]}})
    plan = mongo.command("explain", {"aggregate": A, "pipeline": stages, "cursor": {}}, verbosity="executionStats")

    # The window's match reads A through its session index, not a collection scan.
    assert not any(n.get("stage") == "COLLSCAN" for n in _walk(plan)), plan
    # Every join is the concise form (localField/foreignField) on the leading key of an index of
    # the foreign collection: the form MongoDB runs as an index seek per outer document. The
    # `let`/`$expr`-only form would scan the foreign collection for every session.
    for lookup in _lookups(stages):
        assert "localField" in lookup and "foreignField" in lookup, lookup
        leading = {ix["key"][0][0] for ix in mongo[lookup["from"]].index_information().values()}
        assert lookup["foreignField"] in leading, (lookup["from"], lookup["foreignField"], leading)
    # MongoDB reports what each `$lookup` stage used (indexesUsed / collectionScans, or an SBE
    # EQ_LOOKUP stage and its strategy); the local server reports neither, and the structural
    # check above stands in for it there.
    for node in _walk(plan):
        if "indexesUsed" in node and "collectionScans" in node:
            assert node["indexesUsed"] and node["collectionScans"] == 0, node
        if node.get("stage") == "EQ_LOOKUP":
            assert node.get("strategy") in ("IndexedLoopJoin", "DynamicIndexedLoopJoin"), node


def test_a_session_with_thousands_of_records_joins_into_a_bounded_document(mongo):
    """MongoDB fails a pipeline whose document passes 16 MB (the local server does not): however
    many B and C a session has, its joined document holds at most two of each, and decides the same
    as all of them."""
    mongo_mod.ensure_indexes(mongo)
    a = {"_id": "a-1", "insert_id": "a-1", "recommend_session_id": "big", "doc_id": "d", "context_hash": "h", "created_at": T0}
    mongo[A].insert_one(a)
    many = {
        code: [
            {
                "_id": f"{code}-{k}",
                "insert_id": f"{code}-{k}",
                "recommend_session_id": "big",
                "source_recommend_event_id": "a-1" if k % 3 else "a-other",
                "created_at": T0 + timedelta(milliseconds=k),
                "was_accepted": False,
                "padding": "x" * 1000,
            }
            for k in range(3000)
        ]
        for code in (B, C)
    }
    for code, docs in many.items():
        mongo[code].insert_many(docs)

    (joined,), _ = join.gather(mongo, ["big"])
    assert len(joined["b"]) == len(joined["c"]) == 2
    assert len(bson.encode(joined)) < 64 * 1024
    assert {r["_id"] for r in joined["b"]} == {f"{B}-2999", f"{B}-2997"}  # latest answering a-1, latest answering another
    everything = examples.JoinedSession(_id="big", a=a, a_ids=["a-1"], b=many[B], c=many[C], d=[], e=[], f=[])
    assert examples.build(joined, examples.Rules(), NOW).doc == examples.build(everything, examples.Rules(), NOW).doc

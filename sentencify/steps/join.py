"""The ETL's join: one MongoDB aggregation pipeline over A, run by the database (pipeline.md, Step 1).

`pipeline(match)` is the one definition; the window path runs it for bounded batches of touched
session ids (`gather`), the full rebuild for every session (`gather_all`). Per session it yields
one `examples.JoinedSession`:

- A: the earliest A (by created_at, then insert_id), and the smallest and largest A insert_id
  (two distinct ones: `multiple_a`);
- B, C by `recommend_session_id`: of each, the latest (by created_at, then insert_id) that answers
  A and the latest that answers another A, if any: all `examples.pick` needs for the latest B and C
  and `source_mismatch`, and a session document of bounded size however many records a session
  has (MongoDB fails a pipeline whose document, or a `$lookup`'s result, passes 16 MB);
- D by `_id` from those C's `correction_history_id`;
- E by `_id` = A.context_hash;
- F by `doc_id`, point-in-time: the latest F (by last_updated, then `_id`) with last_updated <=
  A.created_at and valid_until null, absent or >= A.created_at.

Every `$lookup` is the concise form (`localField`/`foreignField`, MongoDB 5.0+), so the equality
runs as a seek on the foreign collection's index (`mongo.INDEX_PLAN`); the optional sub-pipeline
only filters, groups, sorts and limits what that seek found. The `let`/`$expr`-only form scans the foreign
collection once per session (40x slower here). I is not joined: no field of H comes from it.

B or C records of a session without an A never reach the pipeline (it runs over A): `orphans`
finds them, as before, for `etl_rejects`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pymongo.database import Database

from sentencify.mongo import find_in
from sentencify.steps.drift import pages
from sentencify.steps.examples import JoinedSession
from sentencify.steps.quarantine import bisect
from sentencify.steps.touched import A, B, C, D, E, F, group_by
from sentencify.stores import mongodb

SESSION = "recommend_session_id"
Orphans = dict[str, tuple[list[dict], list[dict]]]  # session without an A -> (its B, its C)

A_FIELDS = (
    "insert_id",
    SESSION,
    "created_at",
    "user_id",
    "doc_id",
    "context_hash",
    "reco_category_input",
    "reco_options",
    "P_vec",
    "P_rule",
    "P_doc",
    "doc_maturity_score",
    "applied_weight_doc",
)
B_FIELDS = (
    "insert_id",
    SESSION,
    "source_recommend_event_id",
    "created_at",
    "target_category",
    "target_intensity",
    "target_language",
)
C_FIELDS = (
    "insert_id",
    SESSION,
    "source_recommend_event_id",
    "created_at",
    "was_accepted",
    "selected_option_index",
    "correction_history_id",
)
E_FIELDS = ("embedding_v1", "embedding_version")
F_FIELDS = ("macro_category_hint",)

# Sessions per aggregation on the window path: the `$match` is an `$in` over them, which the local
# server re-checks per document at a cost growing with the square of its length. Server CPU time
# for 1,000 sessions (docs/benchmarks.md, same run, interleaved): 25 -> 1.09 s, 50 -> 1.24 s,
# 100 -> 1.40 s; below 25 the per-aggregate overhead takes over.
WINDOW_BATCH = 25


def _keep(fields: tuple[str, ...]) -> dict[str, int]:
    return dict.fromkeys(fields, 1)


def _lookup(
    collection: str,
    local: str,
    foreign: str,
    as_: str,
    *,
    fields: tuple[str, ...] = (),
    pipeline: list | None = None,
    **extra: Any,
) -> dict:
    """A concise `$lookup` (an index seek on `foreign`), then `pipeline` and a projection on `fields`."""
    sub = [*(pipeline or []), *([{"$project": _keep(fields)}] if fields else [])]
    spec = {"from": collection, "localField": local, "foreignField": foreign, **extra, "as": as_}
    return {"$lookup": {**spec, "pipeline": sub} if sub else spec}


# Of a session's B (or C): the latest answering A (`$$a`) and the latest answering another A.
_LATEST_PER_ANSWER = [
    {
        "$group": {
            "_id": {"$eq": ["$source_recommend_event_id", "$$a"]},
            "r": {"$top": {"sortBy": {"created_at": -1, "insert_id": -1}, "output": "$$ROOT"}},
        }
    },
    {"$replaceWith": "$r"},
]

# F in force when A was shown: pipeline.md's point-in-time join. `$ifNull` makes an absent
# valid_until count as unset, as a null one does.
_IN_FORCE = {
    "$expr": {
        "$and": [
            {"$lte": ["$last_updated", "$$at"]},
            {"$or": [{"$eq": [{"$ifNull": ["$valid_until", None]}, None]}, {"$gte": ["$valid_until", "$$at"]}]},
        ]
    }
}


def pipeline(match: dict[str, Any]) -> list[dict[str, Any]]:
    """The aggregation over A for the sessions whose A records `match` selects -> one document per
    session: `_id`, `a` (the earliest A), `a_min`/`a_max` (its smallest and largest A insert_id),
    `f`, `b`, `c` (each C with its D under `d`), `e`; every part bounded in size.

    `match`: a filter on A (e.g. `{"recommend_session_id": {"$in": [...]}}`, or `{}` for all).
    Ties resolve as `examples.earliest`, `latest` and `in_force` resolve them: by insert_id (F: by
    `_id`). B, C and D come whole: projecting them cost the local server more than sending their
    few fields. D is joined inside the C lookup, by each C's own correction_history_id: the local server
    does not follow a path through an array of documents (`c.correction_history_id`) as MongoDB does."""
    return [
        {"$match": match},
        {
            "$group": {
                "_id": f"${SESSION}",
                # only the fields H uses: every later stage copies the session document
                "a": {"$top": {"sortBy": {"created_at": 1, "insert_id": 1}, "output": {f: f"${f}" for f in ("_id", *A_FIELDS)}}},
                "a_min": {"$min": "$insert_id"},
                "a_max": {"$max": "$insert_id"},
            }
        },
        _lookup(
            F,
            "a.doc_id",
            "doc_id",
            "f",
            fields=F_FIELDS,
            let={"at": "$a.created_at"},
            pipeline=[{"$match": _IN_FORCE}, {"$sort": {"last_updated": -1, "_id": -1}}, {"$limit": 1}],
        ),
        _lookup(B, "_id", SESSION, "b", let={"a": "$a.insert_id"}, pipeline=_LATEST_PER_ANSWER),
        _lookup(
            C,
            "_id",
            SESSION,
            "c",
            let={"a": "$a.insert_id"},
            pipeline=[*_LATEST_PER_ANSWER, _lookup(D, "correction_history_id", "_id", "d")],
        ),
        _lookup(E, "a.context_hash", "_id", "e", fields=E_FIELDS),  # last: the embedding is the largest part
    ]


def _joined(doc: dict[str, Any]) -> JoinedSession:
    """A pipeline document -> the JoinedSession `examples.build` takes (D lifted out of its C)."""
    c = doc["c"]
    return JoinedSession(
        _id=doc["_id"],
        a=doc["a"],
        a_ids=sorted({doc["a_min"], doc["a_max"]}),
        b=doc["b"],
        c=c,
        d=[d for x in c for d in x.pop("d")],
        e=doc["e"],
        f=doc["f"],
    )


def aggregate(db: Database, match: dict[str, Any], batch_size: int = 5000) -> Iterator[JoinedSession]:
    """The pipeline's joined sessions (in no particular order), streamed `batch_size` per reply."""
    for doc in db[A].aggregate(pipeline(match), allowDiskUse=True, batchSize=batch_size):
        yield _joined(doc)


def run(db: Database, match: dict[str, Any]) -> list[JoinedSession]:
    """The pipeline's joined sessions (in no particular order), all of them read."""
    return list(aggregate(db, match))


Refused = list[tuple[str, BaseException]]  # sessions whose join MongoDB refused, with its error


def gather(db: Database, session_ids: list[str], refused: Refused | None = None) -> tuple[list[JoinedSession], Orphans]:
    """The window path: `session_ids` joined, WINDOW_BATCH per aggregation, and their orphans.

    `refused`: when given, an aggregation MongoDB refuses because a joined session passes 16 MB
    (`stores.mongodb.is_too_large`) is bisected down to the sessions at fault, which are appended
    here (neither joined nor orphans); without it, that error propagates."""
    ids = sorted(set(session_ids))
    joined: list[JoinedSession] = []

    def join_part(part: Sequence[str]) -> None:
        joined.extend(run(db, {SESSION: {"$in": list(part)}}))  # all or nothing: run reads the whole cursor first

    for i in range(0, len(ids), WINDOW_BATCH):
        batch = ids[i : i + WINDOW_BATCH]
        if refused is None:
            join_part(batch)
        else:
            refused += bisect(batch, join_part, mongodb.is_too_large)
    with_a = {j["_id"] for j in joined} | {s for s, _ in refused or []}
    return joined, orphans(db, [s for s in ids if s not in with_a])


def gather_all(db: Database, refused: Refused | None = None) -> tuple[list[JoinedSession], Orphans]:
    """The full rebuild: every session with an A joined by one aggregation, and every orphan.
    `refused`: as for `gather` (the rebuild then joins session by batch, to find the ones at fault)."""
    try:
        joined = run(db, {})
    except Exception as exc:
        if refused is None or not mongodb.is_too_large(exc):
            raise
        with_a_ids = [d["_id"] for d in db[A].aggregate([{"$group": {"_id": f"${SESSION}"}}], allowDiskUse=True)]
        joined, _ = gather(db, with_a_ids, refused)
    with_a = {j["_id"] for j in joined} | {s for s, _ in refused or []}
    candidates: set[str] = set()
    for collection in (B, C):
        for doc in db[collection].aggregate([{"$group": {"_id": f"${SESSION}"}}], allowDiskUse=True):
            if doc["_id"] not in with_a:
                candidates.add(doc["_id"])
    return joined, orphans(db, sorted(candidates))


# Joined sessions per reply of a streamed join: the client holds one page, whatever the data's size
# (pipeline.md, "Bounds at any size"); a joined session with its embedding is a few KB to tens of KB.
STREAM_BATCH = 500


def stream_all(db: Database, refused: Refused | None = None) -> Iterator[JoinedSession]:
    """Every session with an A, joined by one aggregation and streamed STREAM_BATCH at a time (a
    full rebuild and `verify`). `refused`: as for `gather`; when MongoDB refuses the one aggregation
    (a joined session past 16 MB), the sessions are joined again page by page to find the ones at
    fault (a session already yielded may come again: consumers are idempotent)."""
    try:
        yield from aggregate(db, {}, STREAM_BATCH)
        return
    except Exception as exc:
        if refused is None or not mongodb.is_too_large(exc):
            raise
    for page in pages(session_ids(db, (A,)), STREAM_BATCH):
        joined, _ = gather(db, page, refused)
        yield from joined


def session_ids(db: Database, collections: Sequence[str], field: str = SESSION) -> Iterator[str]:
    """The distinct string values of `field` over `collections` (one `$unionWith` aggregation),
    streamed in no particular order: the sessions (or users) a full run or `verify` walks."""
    first, *rest = collections
    stages: list[dict[str, Any]] = [{"$project": {"k": f"${field}"}}]
    stages += [{"$unionWith": {"coll": other, "pipeline": [{"$project": {"k": f"${field}"}}]}} for other in rest]
    stages += [{"$match": {"k": {"$type": "string"}}}, {"$group": {"_id": "$k"}}]
    for doc in db[first].aggregate(stages, allowDiskUse=True, batchSize=5000):
        yield doc["_id"]


def having(db: Database, collections: Sequence[str], field: str, values: Sequence[str]) -> set[str]:
    """Which of `values` at least one document of `collections` has as `field` (index seeks, by batch)."""
    left = set(values)
    found: set[str] = set()
    for collection in collections:
        hits = {d[field] for d in find_in(db[collection], field, left, {field: 1, "_id": 0} if field != "_id" else {"_id": 1})}
        found |= hits
        left -= hits
        if not left:
            break
    return found


def orphans(db: Database, session_ids: list[str]) -> Orphans:
    """B and C of sessions that have no A: session -> (its B, its C); sessions with neither left out."""
    b_by = group_by(find_in(db[B], SESSION, session_ids, list(B_FIELDS)))
    c_by = group_by(find_in(db[C], SESSION, session_ids, list(C_FIELDS)))
    return {s: (b_by.get(s, []), c_by.get(s, [])) for s in sorted(set(b_by) | set(c_by))}

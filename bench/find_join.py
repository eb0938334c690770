"""The ETL's former gather, kept as the baseline of `make bench-chain` (`agg/finds`): plain `find`s
in bounded `$in` batches and a join in Python. The chain now joins with the aggregation pipeline of
`sentencify.steps.join`; this is what that pipeline is measured against, in the same run.

Same output as `join.gather` / `join.gather_all`: (joined sessions, orphans).
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo.database import Database

from sentencify.mongo import find_in
from sentencify.steps import examples
from sentencify.steps.examples import JoinedSession
from sentencify.steps.join import A_FIELDS, B_FIELDS, C_FIELDS, E_FIELDS, F
from sentencify.steps.touched import A, B, C, D, E, group_by

_D_FIELDS = ["field", "intensity", "user_prompt", "selected_index"]
_F_FIELDS = ["doc_id", "last_updated", "valid_until", "macro_category_hint"]

Orphans = dict[str, tuple[list[dict], list[dict]]]


def join(
    a_by: dict[str, list[dict]],
    b_by: dict[str, list[dict]],
    c_by: dict[str, list[dict]],
    e_by_hash: dict[str, dict],
    d_by_id: dict[str, dict],
    f_by_doc: dict[str, list[dict]],
    sessions: Iterable[str],
) -> tuple[list[JoinedSession], Orphans]:
    """Pure: the records of `sessions`, grouped -> one JoinedSession per session with an A, and the orphans."""
    joined: list[JoinedSession] = []
    orphans: Orphans = {}
    for s in sessions:
        a_all, b, c = a_by.get(s), b_by.get(s, []), c_by.get(s, [])
        if not a_all:
            if b or c:
                orphans[s] = (b, c)
            continue
        a = examples.earliest(a_all)
        e = e_by_hash.get(a["context_hash"])
        f = examples.in_force(f_by_doc.get(a["doc_id"], []), a["created_at"])
        d = [d_by_id[x["correction_history_id"]] for x in c if x.get("correction_history_id") in d_by_id]
        joined.append(
            JoinedSession(
                _id=s,
                a=a,
                a_ids=sorted({x["insert_id"] for x in a_all}),
                b=b,
                c=c,
                d=d,
                e=[e] if e else [],
                f=[{"_id": f["_id"], "macro_category_hint": f.get("macro_category_hint")}] if f else [],
            )
        )
    return joined, orphans


def gather(db: Database, session_ids: list[str]) -> tuple[list[JoinedSession], Orphans]:
    """Every record these sessions need, fetched by key in bounded batches, then joined."""
    a_by = group_by(find_in(db[A], "recommend_session_id", session_ids, list(A_FIELDS)))
    b_by = group_by(find_in(db[B], "recommend_session_id", session_ids, list(B_FIELDS)))
    c_by = group_by(find_in(db[C], "recommend_session_id", session_ids, list(C_FIELDS)))
    first = [examples.earliest(a_all) for a_all in a_by.values()]
    e_by_hash = {e["_id"]: e for e in find_in(db[E], "_id", (a["context_hash"] for a in first), list(E_FIELDS))}
    d_ids = (c.get("correction_history_id") for cs in c_by.values() for c in cs)
    d_by_id = {d["_id"]: d for d in find_in(db[D], "_id", d_ids, _D_FIELDS)}
    f_by_doc = group_by(find_in(db[F], "doc_id", (a["doc_id"] for a in first), _F_FIELDS), key="doc_id")
    return join(a_by, b_by, c_by, e_by_hash, d_by_id, f_by_doc, session_ids)


def scan_all(db: Database) -> tuple[list[JoinedSession], Orphans]:
    """Every session joined from one scan of each collection (whole documents: a server-side
    projection cost the local server more than sending the fields it would drop)."""
    a_by = group_by(db[A].find({}, batch_size=5000))
    b_by = group_by(db[B].find({}, batch_size=5000))
    c_by = group_by(db[C].find({}, batch_size=5000))
    wanted_e = {examples.earliest(a_all)["context_hash"] for a_all in a_by.values()}
    e_by_hash = {e["_id"]: e for e in db[E].find({}, list(E_FIELDS), batch_size=5000) if e["_id"] in wanted_e}
    d_by_id = {d["_id"]: d for d in db[D].find({}, batch_size=5000)}
    f_by_doc = group_by(db[F].find({}, batch_size=5000), key="doc_id")
    return join(a_by, b_by, c_by, e_by_hash, d_by_id, f_by_doc, sorted(set(a_by) | set(b_by) | set(c_by)))

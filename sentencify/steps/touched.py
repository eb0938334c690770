"""Which sessions a window touches (pipeline.md, 'Windows and late data')."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pymongo.database import Database

from sentencify.contract import A as A
from sentencify.contract import B as B
from sentencify.contract import C as C
from sentencify.contract import D as D
from sentencify.contract import E as E
from sentencify.contract import F as F
from sentencify.contract import I as I
from sentencify.mongo import find_in
from sentencify.window import Window

_CHUNK = 5000


def _distinct(db: Database, collection: str, field: str, match: dict) -> set:
    # $group instead of distinct(): no 16 MB result limit on a busy hour.
    pipeline = [{"$match": match}, {"$group": {"_id": f"${field}"}}]
    return {d["_id"] for d in db[collection].aggregate(pipeline) if d["_id"] is not None}


def group_by(docs: Iterable[dict], key: str = "recommend_session_id") -> dict[str, list[dict]]:
    """Documents by the value of one field, in arrival order."""
    out: dict[str, list[dict]] = {}
    for doc in docs:
        out.setdefault(doc[key], []).append(doc)
    return out


def chunks(values: Any, size: int = _CHUNK) -> Iterator[list]:
    values = list(values)
    for i in range(0, len(values), size):
        yield values[i : i + size]


def touched_sessions(db: Database, window: Window) -> set[str]:
    """Sessions with an A, B, C or I ingested in the window, or pointing at a D or E ingested in it."""
    in_window = window.mongo_filter()
    sessions: set[str] = set()
    for collection in (A, B, C, I):
        sessions |= _distinct(db, collection, "recommend_session_id", in_window)
    new_d = _distinct(db, D, "_id", in_window)
    sessions |= {c["recommend_session_id"] for c in find_in(db[C], "correction_history_id", new_d, {"recommend_session_id": 1})}
    new_e = _distinct(db, E, "_id", in_window)
    sessions |= {a["recommend_session_id"] for a in find_in(db[A], "context_hash", new_e, {"recommend_session_id": 1})}
    return sessions

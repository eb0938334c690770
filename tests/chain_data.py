"""Hand-built log records stored exactly as the consumer stores them, ingested at a chosen time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumer.records import Position
from consumer.validate import Validator
from sentencify.schemas import BY_CODE
from sentencify.window import Window

DAY = datetime(2026, 11, 1, tzinfo=UTC)


def hour(h: int) -> Window:
    return Window(DAY + timedelta(hours=h), DAY + timedelta(hours=h + 1))


def at(h: int, minute: int = 0, second: float = 0) -> str:
    return (DAY + timedelta(hours=h, minutes=minute, seconds=second)).isoformat()


class Logs:
    def __init__(self, db, embedding_dim: int = 384) -> None:
        self.db = db
        self.validator = Validator(embedding_dim)
        self.offset = 0

    def put(self, code: str, ingested_hour: int | datetime, **fields) -> dict:
        """`ingested_hour`: an hour of DAY (stored at half past), or the exact `ingested_at`."""
        et = BY_CODE[code]
        self.offset += 1
        doc = self.validator.validate(et, fields, Position("test." + et.name, 0, self.offset))
        doc["ingested_at"] = (
            ingested_hour if isinstance(ingested_hour, datetime) else DAY + timedelta(hours=ingested_hour, minutes=30)
        )
        self.db[et.name].insert_one(doc)
        return doc

    # One call per record kind, with the usual fields; tests override what matters to them.
    def a(self, h, session, insert_id=None, **kw):
        base = {
            "insert_id": insert_id or f"a-{session}",
            "recommend_session_id": session,
            "doc_id": "doc-1",
            "context_hash": f"h-{session}",
            "created_at": at(h),
            "user_id": "u1",
            "reco_category_input": "email",
            "reco_options": [{"category": "email", "strength": "weak", "score": 0.7}],
        }
        return self.put("A", kw.pop("ingested", h), **{**base, **kw})

    def b(self, h, session, insert_id=None, **kw):
        base = {
            "insert_id": insert_id or f"b-{session}",
            "recommend_session_id": session,
            "source_recommend_event_id": f"a-{session}",
            "created_at": at(h, 0, 2),
            "user_id": "u1",
            "target_category": "email",
            "target_intensity": "moderate",
            "target_language": "ko",
        }
        return self.put("B", kw.pop("ingested", h), **{**base, **kw})

    def c(self, h, session, insert_id=None, **kw):
        base = {
            "insert_id": insert_id or f"c-{session}",
            "recommend_session_id": session,
            "source_recommend_event_id": f"a-{session}",
            "was_accepted": True,
            "created_at": at(h, 0, 10),
            "user_id": "u1",
            "selected_option_index": 1,
            "correction_history_id": f"d-{session}",
        }
        return self.put("C", kw.pop("ingested", h), **{**base, **kw})

    def d(self, h, session, **kw):
        base = {
            "correction_history_id": f"d-{session}",
            "created_at": at(h, 0, 10),
            "user": "u1",
            "field": "email",
            "intensity": "moderate",
            "user_prompt": "be polite",
            "selected_index": 1,
        }
        return self.put("D", kw.pop("ingested", h), **{**base, **kw})

    def e(self, h, session, embedding=None, **kw):
        base = {
            "context_hash": f"h-{session}",
            "doc_id": "doc-1",
            "created_at": at(h),
            "embedding_v1": embedding or [0.5] * 384,
            "embedding_version": "v1",
        }
        return self.put("E", kw.pop("ingested", h), **{**base, **kw})

    def f(self, h, insert_id, last_updated, hint, valid_until=None, **kw):
        return self.put(
            "F",
            kw.pop("ingested", h),
            insert_id=insert_id,
            doc_id=kw.pop("doc_id", "doc-1"),
            last_updated=last_updated,
            macro_category_hint=hint,
            valid_until=valid_until,
            **kw,
        )

    def full_session(self, h, session, **overrides):
        """A clean, high-consistency session: E, A, B, C (accepted) and its D."""
        self.e(h, session, **overrides.get("e", {}))
        self.a(h, session, **overrides.get("a", {}))
        self.b(h, session, **overrides.get("b", {}))
        self.c(h, session, **overrides.get("c", {}))
        self.d(h, session, **overrides.get("d", {}))


def snapshot(db, collection: str, drop: tuple[str, ...] = ("processed_at", "updated_at")) -> dict:
    return {d["_id"]: {k: v for k, v in d.items() if k not in drop} for d in db[collection].find()}

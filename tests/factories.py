"""Valid log records of each type, with overrides, for hand-built test data."""

from __future__ import annotations

import itertools
import json

_seq = itertools.count()


def _next(prefix: str) -> str:
    return f"{prefix}-{next(_seq):06d}"


def record(code: str, **overrides) -> dict:
    base = {
        "A": lambda: {
            "insert_id": _next("a"),
            "recommend_session_id": _next("s"),
            "doc_id": "doc-1",
            "context_hash": _next("h"),
            "created_at": "2026-11-01T10:00:00Z",
            "user_id": "u1",
            "reco_category_input": "email",
            "reco_options": [{"category": "email", "strength": "weak", "score": 0.7}],
        },
        "B": lambda: {
            "insert_id": _next("b"),
            "recommend_session_id": _next("s"),
            "source_recommend_event_id": _next("a"),
            "created_at": "2026-11-01T10:00:01Z",
            "user_id": "u1",
            "target_category": "email",
            "target_intensity": "weak",
            "target_language": "ko",
        },
        "C": lambda: {
            "insert_id": _next("c"),
            "recommend_session_id": _next("s"),
            "source_recommend_event_id": _next("a"),
            "was_accepted": True,
            "created_at": "2026-11-01T10:00:05Z",
            "user_id": "u1",
            "selected_option_index": 0,
        },
        "D": lambda: {
            "correction_history_id": _next("d"),
            "created_at": "2026-11-01T10:00:05Z",
            "user": "u1",
            "field": "email",
            "intensity": "weak",
            "selected_index": 0,
        },
        "E": lambda: {
            "context_hash": _next("h"),
            "doc_id": "doc-1",
            "created_at": "2026-11-01T09:59:59Z",
            "embedding_v1": [0.1] * 384,
            "embedding_version": "v1",
        },
        "F": lambda: {
            "insert_id": _next("f"),
            "doc_id": "doc-1",
            "last_updated": "2026-11-01T09:00:00Z",
            "macro_category_hint": "email",
        },
        "I": lambda: {
            "insert_id": _next("i"),
            "recommend_session_id": _next("s"),
            "created_at": 1761991200000,
            "latency_ms": 87.5,
        },
    }[code]()
    base.update(overrides)
    return base


def encoded(code: str, **overrides) -> bytes:
    return json.dumps(record(code, **overrides)).encode()

"""One joined session -> one training example (H) or one reject: the consistency rules of pipeline.md.

Pure: no I/O. The ETL's aggregation pipeline (sentencify.steps.join) joins a session's records
into a `JoinedSession`, for the window path and the full rebuild alike; this module decides in
three steps: `pick` the records the example is built from, `check` the consistency rules,
`document` the example. The rules stay here rather than in the pipeline: measured 30x cheaper in
Python, and one implementation (docs/design.md, "The ETL's join").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from sentencify.schemas.derived import SCHEMA_VERSION


class JoinedSession(TypedDict):
    """Everything known about one session that has an A."""

    _id: str  # recommend_session_id
    a: dict[str, Any]  # the earliest A (by created_at, then insert_id)
    a_ids: list[str]  # distinct A insert_ids of the session: all, or at least two when there are several
    # B and C of the session: all, or (the pipeline) the latest answering A and the latest answering
    # another A: `pick` decides the same from either
    b: list[dict[str, Any]]
    c: list[dict[str, Any]]
    d: list[dict[str, Any]]  # the D records those C's point at
    e: list[dict[str, Any]]  # the E of A.context_hash (0 or 1)
    f: list[dict[str, Any]]  # the F in force when A was shown (0 or 1)


@dataclass(frozen=True)
class Rules:
    time_gap: timedelta = timedelta(seconds=5)


@dataclass
class Example:
    doc: dict[str, Any]


@dataclass
class Reject:
    doc: dict[str, Any]


@dataclass(frozen=True)
class Picked:
    """The records an example is built from."""

    a: dict[str, Any]
    b: dict[str, Any] | None  # the latest B that answers A
    c: dict[str, Any] | None  # the latest C that answers A
    d: dict[str, Any] | None  # that C's ground truth
    e: dict[str, Any] | None
    f: dict[str, Any] | None
    mismatched: bool  # a B or C of the session answers another A


def latest(records: list[dict]) -> dict | None:
    """Latest by created_at, then insert_id (deterministic when two share a time)."""
    if not records:
        return None
    return max(records, key=lambda r: (r["created_at"], r.get("insert_id") or ""))


def earliest(records: list[dict]) -> dict:
    """The A a session's example is built from: earliest by created_at, then insert_id."""
    return min(records, key=lambda r: (r["created_at"], r["insert_id"]))


def in_force(analyses: list[dict], at: datetime) -> dict | None:
    """The point-in-time F: the latest analysis with last_updated <= `at` and valid_until (if set) >= `at`."""
    valid = [f for f in analyses if f["last_updated"] <= at and (f.get("valid_until") is None or f["valid_until"] >= at)]
    return max(valid, key=lambda f: (f["last_updated"], f["_id"])) if valid else None


def _ids(records: list[dict]) -> list[str]:
    return sorted(r["insert_id"] for r in records)


def pick(session: JoinedSession) -> Picked:
    a = session["a"]
    b_all, c_all = session.get("b") or [], session.get("c") or []
    b_ok = [b for b in b_all if b.get("source_recommend_event_id") == a["insert_id"]]
    c_ok = [c for c in c_all if c.get("source_recommend_event_id") == a["insert_id"]]
    b, c = latest(b_ok), latest(c_ok)
    d = None
    if c is not None and c.get("correction_history_id"):
        d = next((x for x in session.get("d") or [] if x["_id"] == c["correction_history_id"]), None)
    return Picked(
        a,
        b,
        c,
        d,
        next(iter(session.get("e") or []), None),
        next(iter(session.get("f") or []), None),
        mismatched=len(b_ok) < len(b_all) or len(c_ok) < len(c_all),
    )


def contradiction(session_id: str, p: Picked, now: datetime) -> Reject | None:
    """`outcome_contradiction`: not accepted, yet its ground truth has a selection -> no example."""
    if p.c is None or p.c["was_accepted"] or p.d is None or p.d.get("selected_index") is None:
        return None
    return Reject(
        {
            "_id": session_id,
            "recommend_session_id": session_id,
            "reason": "outcome_contradiction",
            "insert_ids": sorted([p.a["insert_id"], p.c["insert_id"]]),
            "correction_history_id": p.d["_id"],
            "source_recommend_event_id": p.a["insert_id"],
            "detected_at": now,
        }
    )


def check(session: JoinedSession, p: Picked, rules: Rules) -> list[str]:
    """The low-consistency reasons, in the order pipeline.md lists them (empty: high)."""
    reasons: list[str] = []
    if p.mismatched:
        reasons.append("source_mismatch")
    if p.b is not None and abs(p.b["created_at"] - p.a["created_at"]) > rules.time_gap:
        reasons.append("time_gap")
    if p.c is not None and p.c["created_at"] < p.a["created_at"]:
        reasons.append("time_order")
    if len(set(session.get("a_ids") or [])) > 1:
        reasons.append("multiple_a")
    if not (p.e or {}).get("embedding_v1"):
        reasons.append("missing_context")
    if p.c is not None and p.b is None:
        reasons.append("missing_run")
    if p.c is not None and p.c["was_accepted"] and p.d is None:
        reasons.append("missing_ground_truth")
    return reasons


def build(session: JoinedSession, rules: Rules, now: datetime) -> Example | Reject:
    p = pick(session)
    rejected = contradiction(session["_id"], p, now)
    if rejected is not None:
        return rejected
    return Example(document(session["_id"], p, check(session, p, rules), now))


def document(session_id: str, p: Picked, reasons: list[str], now: datetime) -> dict[str, Any]:
    """The example (pipeline.md, Step 1), from the picked records and the rules' verdict."""
    a, b, c, d, e, f = p.a, p.b, p.c, p.d, p.e, p.f
    embedding = (e or {}).get("embedding_v1") or []
    options = a.get("reco_options") or []
    recommended_intensity = options[0].get("strength") if options else None
    executed = {k: (b or {}).get(f"target_{k}") for k in ("category", "intensity", "language")}
    final_category = _first((d or {}).get("field"), executed["category"], a.get("reco_category_input"))
    final_intensity = _first((d or {}).get("intensity"), executed["intensity"])
    category_match = a.get("reco_category_input") == final_category
    intensity_match = (
        None if recommended_intensity is None or final_intensity is None else recommended_intensity == final_intensity
    )

    return {
        "_id": session_id,
        "example_id": session_id,
        "recommend_session_id": session_id,
        "user_id": a.get("user_id"),
        "doc_id": a["doc_id"],
        "context_hash": a["context_hash"],
        "source_recommend_event_id": a["insert_id"],
        "reco_category_input": a.get("reco_category_input"),
        "reco_scores_vec": a.get("P_vec"),
        "reco_scores_rule": a.get("P_rule"),
        "reco_scores_doc": a.get("P_doc"),
        "doc_maturity_score": a.get("doc_maturity_score"),
        "applied_weight_doc": a.get("applied_weight_doc"),
        "recommended_intensity": recommended_intensity,
        "context_embedding": embedding,
        "embedding_version": (e or {}).get("embedding_version"),
        "macro_category_hint": (f or {}).get("macro_category_hint"),
        "executed_target_category": executed["category"],
        "executed_target_intensity": executed["intensity"],
        "executed_target_language": executed["language"],
        "was_accepted": bool(c["was_accepted"]) if c is not None else False,
        "selected_option_index": (c or {}).get("selected_option_index"),
        "groundtruth_field": (d or {}).get("field"),
        "groundtruth_intensity": (d or {}).get("intensity"),
        "groundtruth_user_prompt": (d or {}).get("user_prompt"),
        "groundtruth_selected_index": (d or {}).get("selected_index"),
        "final_category": final_category,
        "final_intensity": final_intensity,
        "match_metrics": {
            "is_category_match": category_match,
            "is_intensity_match": intensity_match,
            "match_score": int(category_match) + int(bool(intensity_match)),
        },
        "consistency_flag": "low" if reasons else "high",
        "consistency_reasons": reasons,
        "created_at": a["created_at"],
        "processed_at": now,
        "schema_version": SCHEMA_VERSION,
    }


def orphan(session_id: str, b: list[dict], c: list[dict], now: datetime) -> Reject:
    """B or C records whose session has no A (yet)."""
    return Reject(
        {
            "_id": session_id,
            "recommend_session_id": session_id,
            "reason": "orphan",
            "insert_ids": _ids(b) + _ids(c),
            "correction_history_id": None,
            "source_recommend_event_id": next((r.get("source_recommend_event_id") for r in b + c), None),
            "detected_at": now,
        }
    )


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)

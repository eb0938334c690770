"""One joined session -> one training example (H) or one reject: the consistency rules of pipeline.md.

Pure: no I/O. The ETL's aggregation pipeline gathers a session's records; this decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sentencify.schemas.derived import SCHEMA_VERSION


@dataclass(frozen=True)
class Rules:
    time_gap: timedelta = timedelta(seconds=5)


@dataclass
class Example:
    doc: dict[str, Any]


@dataclass
class Reject:
    doc: dict[str, Any]


def latest(records: list[dict]) -> dict | None:
    """Latest by created_at, then insert_id (deterministic when two share a time)."""
    if not records:
        return None
    return max(records, key=lambda r: (r["created_at"], r.get("insert_id") or ""))


def _ids(records: list[dict]) -> list[str]:
    return sorted(r["insert_id"] for r in records)


def build(session: dict, rules: Rules, now: datetime) -> Example | Reject:
    """`session` = {_id, a (earliest A), a_ids, b: [B], c: [C], e: [E], f: [F], d: [D]}."""
    session_id = session["_id"]
    a = session["a"]
    reasons: list[str] = []

    b_all, c_all = session.get("b") or [], session.get("c") or []
    b_ok = [b for b in b_all if b.get("source_recommend_event_id") == a["insert_id"]]
    c_ok = [c for c in c_all if c.get("source_recommend_event_id") == a["insert_id"]]
    if len(b_ok) < len(b_all) or len(c_ok) < len(c_all):
        reasons.append("source_mismatch")
    b, c = latest(b_ok), latest(c_ok)

    d = None
    if c is not None and c.get("correction_history_id"):
        d = next((x for x in session.get("d") or [] if x["_id"] == c["correction_history_id"]), None)

    if c is not None and not c["was_accepted"] and d is not None and d.get("selected_index") is not None:
        return Reject({
            "_id": session_id,
            "recommend_session_id": session_id,
            "reason": "outcome_contradiction",
            "insert_ids": sorted([a["insert_id"], c["insert_id"]]),
            "correction_history_id": d["_id"],
            "source_recommend_event_id": a["insert_id"],
            "detected_at": now,
        })

    if b is not None and abs(b["created_at"] - a["created_at"]) > rules.time_gap:
        reasons.append("time_gap")
    if c is not None and c["created_at"] < a["created_at"]:
        reasons.append("time_order")
    if len(set(session.get("a_ids") or [])) > 1:
        reasons.append("multiple_a")
    e = (session.get("e") or [None])[0]
    embedding = (e or {}).get("embedding_v1") or []
    if not embedding:
        reasons.append("missing_context")
    if c is not None and b is None:
        reasons.append("missing_run")
    if c is not None and c["was_accepted"] and d is None:
        reasons.append("missing_ground_truth")

    f = (session.get("f") or [None])[0]
    options = a.get("reco_options") or []
    recommended_intensity = options[0].get("strength") if options else None
    executed = {k: (b or {}).get(f"target_{k}") for k in ("category", "intensity", "language")}
    final_category = _first((d or {}).get("field"), executed["category"], a.get("reco_category_input"))
    final_intensity = _first((d or {}).get("intensity"), executed["intensity"])
    category_match = a.get("reco_category_input") == final_category
    intensity_match = (
        None if recommended_intensity is None or final_intensity is None else recommended_intensity == final_intensity
    )

    return Example({
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
    })


def orphan(session_id: str, b: list[dict], c: list[dict], now: datetime) -> Reject:
    """B or C records whose session has no A (yet)."""
    return Reject({
        "_id": session_id,
        "recommend_session_id": session_id,
        "reason": "orphan",
        "insert_ids": _ids(b) + _ids(c),
        "correction_history_id": None,
        "source_recommend_event_id": next((r.get("source_recommend_event_id") for r in b + c), None),
        "detected_at": now,
    })


def _first(*values):
    return next((v for v in values if v is not None), None)

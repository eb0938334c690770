"""Realistic recommender traffic: sessions of A..I records, anomalies at a given rate, deterministic by seed.

`generate()` is pure: it yields `Record`s with the outcome each should have once ingested
(stored under a collection and `_id`, or dead-lettered with a reason), so tests can compare.
`produce()` sends them to Kafka.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sentencify.schemas import BY_CODE, CATEGORIES, INTENSITIES, LANGUAGES

ANOMALY_KINDS = (
    "late",  # a session's C arrives after everything else
    "duplicated",  # a record delivered twice (same key)
    "multiple_a",  # a second, different A for the same session
    "skewed",  # B far from A in time, or C before A
    "mismatched",  # B or C pointing at another session's A
    "contradictory",  # C not accepted while its D has a selected index
    "orphan",  # B/C whose session has no A
    "missing_context",  # no E, or an empty embedding
    "malformed",  # bytes the consumer must dead-letter
)
MALFORMED_KINDS = ("not_json", "not_object", "missing_field", "wrong_type", "unknown_topic", "too_large")

_LANG_WEIGHTS = (0.55, 0.25, 0.1, 0.05, 0.05)
_PROVIDERS = ("openai", "anthropic", "upstage")


@dataclass
class Record:
    topic_suffix: str  # collection name, or an unknown name for the unknown-topic anomaly
    key: bytes | None
    value: bytes
    expect_collection: str | None  # None: expected in dead_letters
    expect_id: str | None
    expect_reason: str | None = None


@dataclass
class Manifest:
    """What a run produced and what it should become."""

    records: int = 0
    expected_ids: dict[str, set[str]] = field(default_factory=dict)
    dead_letters: Counter = field(default_factory=Counter)
    anomalies: Counter = field(default_factory=Counter)

    def add(self, record: Record) -> None:
        self.records += 1
        if record.expect_collection is None:
            self.dead_letters[record.expect_reason] += 1
        else:
            self.expected_ids.setdefault(record.expect_collection, set()).add(str(record.expect_id))

    def stored_counts(self) -> dict[str, int]:
        return {c: len(ids) for c, ids in sorted(self.expected_ids.items())}


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


def category_centers(seed: int, dim: int) -> dict[str, list[float]]:
    """One unit vector per category: embeddings of a category cluster around it."""
    rng = random.Random(f"centers:{seed}:{dim}")
    centers = {}
    for cat in CATEGORIES:
        v = [rng.gauss(0, 1) for _ in range(dim)]
        n = math.sqrt(sum(x * x for x in v))
        centers[cat] = [x / n for x in v]
    return centers


def _embedding(rng: random.Random, center: list[float], noise: float = 0.35) -> list[float]:
    v = [c + rng.gauss(0, noise / math.sqrt(len(center))) for c in center]
    n = math.sqrt(sum(x * x for x in v))
    return [round(x / n, 5) for x in v]


def _scores(rng: random.Random, top: str) -> dict[str, float]:
    raw = {c: rng.random() * (3.0 if c == top else 1.0) for c in CATEGORIES}
    total = sum(raw.values())
    return {c: round(v / total, 4) for c, v in raw.items()}


def _encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _Users:
    """Users with their own habits, so profiles differ."""

    def __init__(self, rng: random.Random, count: int) -> None:
        self.ids = [f"user_{i:05d}" for i in range(count)]
        self.favourite = {u: rng.choice(CATEGORIES) for u in self.ids}
        self.language = {u: rng.choices(LANGUAGES, _LANG_WEIGHTS)[0] for u in self.ids}
        self.docs = {u: [f"doc_{u[5:]}_{j}" for j in range(rng.randint(1, 4))] for u in self.ids}


def generate(
    sessions: int,
    *,
    seed: int = 42,
    anomalies: float = 0.0,
    start: datetime | None = None,
    hours: float = 1.0,
    embedding_dim: int = 384,
) -> Iterator[Record]:
    if not 0.0 <= anomalies <= 1.0:
        raise ValueError(f"--anomalies must be between 0 and 1, got {anomalies}")
    rng = random.Random(seed)
    ids = _Ids(rng)
    start = (start or datetime.now(UTC) - timedelta(hours=hours)).astimezone(UTC)
    users = _Users(rng, max(1, sessions // 8))
    centers = category_centers(seed, embedding_dim)
    span_s = hours * 3600
    times = sorted(rng.random() * span_s for _ in range(sessions))
    late: list[Record] = []
    seen_contexts: set[str] = set()
    for n, offset_s in enumerate(times):
        at = start + timedelta(seconds=offset_s)
        kind = rng.choice(ANOMALY_KINDS) if rng.random() < anomalies else None
        out = list(_session(rng, ids, users, centers, at, kind, seen_contexts, population(seed, sessions), n))
        for rec in out:
            if isinstance(rec, tuple):  # ("late", record)
                late.append(rec[1])
            else:
                yield rec
    yield from late


def population(seed: int, sessions: int) -> str:
    """What a session id starts with for this seed and size (`sess_<population>_<n>`)."""
    return f"{seed}x{sessions}"


def _session(rng, ids, users, centers, at, kind, seen_contexts, population, n):
    user = rng.choice(users.ids)
    doc_id = rng.choice(users.docs[user])
    # Same population (seed and size): same ids, so a re-run stores nothing twice. Another
    # population draws other record ids, so it must not reuse these session ids either.
    session_id = f"sess_{population}_{n:07d}"
    reco_cat = users.favourite[user] if rng.random() < 0.4 else rng.choice(CATEGORIES)
    strength = rng.choice(INTENSITIES)
    context_full = f"{doc_id} paragraph {rng.randint(0, 40)}: text the writer selected about {reco_cat}."
    context_hash = hashlib.sha256((doc_id + context_full).encode()).hexdigest()

    if kind == "malformed":
        yield _malformed(rng, ids, session_id, at)
        kind = None

    # E: the context, once per distinct context (the key is its hash)
    if context_hash not in seen_contexts and kind != "missing_context":
        seen_contexts.add(context_hash)
        e = {
            "context_hash": context_hash,
            "doc_id": doc_id,
            "created_at": _iso(at - timedelta(milliseconds=300)),
            "user_id": user,
            "selected_text": f"selected text {n}",
            "context_prev": "previous sentence.",
            "context_next": "next sentence.",
            "context_preview": context_full[:60],
            "context_full": context_full,
            "embedding_v1": _embedding(rng, centers[reco_cat]),
            "embedding_version": "v1",
            "source": rng.choice(("drag", "auto")),
        }
        yield _rec("E", doc_id, e)
    elif kind == "missing_context" and rng.random() < 0.5 and context_hash not in seen_contexts:
        seen_contexts.add(context_hash)
        e = {
            "context_hash": context_hash,
            "doc_id": doc_id,
            "created_at": _iso(at),
            "embedding_v1": [],
            "embedding_version": "v1",
        }
        yield _rec("E", doc_id, e)

    # F: a macro analysis of the document, sometimes
    if rng.random() < 0.3:
        f_at = at - timedelta(minutes=rng.randint(1, 120))
        f = {
            "insert_id": ids.uuid(),
            "doc_id": doc_id,
            "last_updated": _iso(f_at),
            "macro_topic": f"topic of {doc_id}",
            "macro_category_hint": rng.choice(CATEGORIES),
            "valid_until": _iso(f_at + timedelta(hours=rng.choice((1, 6, 24)))),
            "diff_ratio": round(rng.random() * 0.5, 3),
            "invalidated_by_diff": False,
            "macro_llm_version": "macro-v1",
        }
        yield _rec("F", doc_id, f)

    a_id = ids.uuid()
    scores = _scores(rng, reco_cat)
    weights = {"weight_vec": 0.35, "weight_rule": 0.2, "weight_doc": 0.15, "weight_user": 0.2, "weight_cluster": 0.1}
    maturity = round(rng.random(), 3)
    a = {
        "insert_id": a_id,
        "recommend_session_id": session_id,
        "doc_id": doc_id,
        "context_hash": context_hash,
        "created_at": _iso(at),
        "user_id": user,
        "reco_category_input": reco_cat,
        "reco_options": [
            {"category": reco_cat, "strength": strength, "score": scores[reco_cat]},
            {"category": rng.choice(CATEGORIES), "strength": rng.choice(INTENSITIES), "score": 0.1},
        ],
        "P_vec": scores,
        "P_rule": _scores(rng, reco_cat),
        "P_doc": _scores(rng, rng.choice(CATEGORIES)),
        "P_user": _scores(rng, users.favourite[user]),
        "P_cluster": _scores(rng, reco_cat),
        **weights,
        "doc_maturity_score": maturity,
        "applied_weight_doc": round(0.15 * maturity, 4),
        "cache_hit_macro": rng.random() < 0.6,
        "cache_hit_user": rng.random() < 0.8,
        "cache_hit_cluster": rng.random() < 0.5,
        "model_version": "reco-2.1",
        "api_version": "v2",
        "embedding_version": "v1",
        "schema_version": "2.0",
    }
    if kind != "orphan":
        yield _rec("A", session_id, a)
        if kind == "duplicated":
            yield _rec("A", session_id, a)
        if kind == "multiple_a":
            yield _rec("A", session_id, {**a, "insert_id": ids.uuid(), "created_at": _iso(at + timedelta(milliseconds=700))})
        latency = round(rng.lognormvariate(4.6, 0.45), 1)  # ~100 ms median, long tail
        i = {
            "insert_id": ids.uuid(),
            "recommend_session_id": session_id,
            "created_at": _iso(at + timedelta(milliseconds=latency)),
            "latency_ms": latency,
            "user_id": user,
            "doc_id": doc_id,
            **{
                k: a[k]
                for k in (
                    "P_vec",
                    "P_rule",
                    "P_doc",
                    "P_user",
                    "P_cluster",
                    "cache_hit_macro",
                    "cache_hit_user",
                    "cache_hit_cluster",
                    "model_version",
                    "api_version",
                )
            },
            **weights,
        }
        yield _rec("I", session_id, i)

    runs = rng.random() < 0.6 or kind in ("orphan", "skewed", "mismatched", "contradictory", "late")
    if not runs:
        return
    b_at = at + timedelta(seconds=rng.uniform(0.5, 4.0))
    source_id = a_id if kind != "mismatched" else ids.uuid()
    if kind == "skewed" and rng.random() < 0.5:
        b_at = at + timedelta(seconds=rng.uniform(8, 60))
    target_cat = reco_cat if rng.random() < 0.7 else users.favourite[user]
    b = {
        "insert_id": ids.uuid(),
        "recommend_session_id": session_id,
        "source_recommend_event_id": source_id,
        "created_at": _iso(b_at),
        "user_id": user,
        "doc_id": doc_id,
        "target_category": target_cat,
        "target_intensity": strength if rng.random() < 0.6 else rng.choice(INTENSITIES),
        "target_language": users.language[user] if rng.random() < 0.9 else rng.choice(LANGUAGES),
        "response_time_ms": round(rng.lognormvariate(6.5, 0.4), 1),
        "llm_provider": rng.choice(_PROVIDERS),
        "paraphrase_llm_version": "para-3",
    }
    yield _rec("B", session_id, b)
    if kind == "duplicated" and rng.random() < 0.5:
        yield _rec("B", session_id, b)

    if not (rng.random() < 0.8 or kind in ("contradictory", "late", "orphan")):
        return
    accepted = rng.random() < 0.7 if kind != "contradictory" else False
    c_at = b_at + timedelta(seconds=rng.uniform(2, 40))
    if kind == "skewed" and b_at - at < timedelta(seconds=5):
        c_at = at - timedelta(seconds=rng.uniform(1, 30))
    option = rng.randint(0, 2) if accepted else None
    history_id = ids.uuid() if (accepted or kind == "contradictory" or rng.random() < 0.3) else None
    c = {
        "insert_id": ids.uuid(),
        "recommend_session_id": session_id,
        "source_recommend_event_id": source_id,
        "was_accepted": accepted,
        "created_at": _iso(c_at),
        "user_id": user,
        "doc_id": doc_id,
        "selected_option_index": option,
        "total_paraphrasing_sentence_count": 3,
        "correction_history_id": history_id,
        "paraphrase_llm_version": "para-3",
    }
    c_rec = _rec("C", session_id, c)
    yield ("late", c_rec) if kind == "late" else c_rec
    if history_id:
        d = {
            "correction_history_id": history_id,
            "created_at": _iso(c_at),
            "user": user,
            "field": b["target_category"],
            "intensity": b["target_intensity"],
            "user_prompt": None,
            "input_sentence": f"original sentence {n}",
            "output_sentences": [f"paraphrase {k} of sentence {n}" for k in range(3)],
            "selected_index": option if kind != "contradictory" else rng.randint(0, 2),
        }
        yield _rec("D", history_id, d)


def _rec(code: str, key: str, obj: dict) -> Record:
    et = BY_CODE[code]
    return Record(et.name, key.encode(), _encode(obj), et.name, obj[et.key_field])


def _malformed(rng: random.Random, ids: _Ids, session_id: str, at: datetime) -> Record:
    kind = rng.choice(MALFORMED_KINDS)
    good = {"insert_id": ids.uuid(), "recommend_session_id": session_id, "created_at": _iso(at), "latency_ms": 12.0}
    key = session_id.encode()
    if kind == "not_json":
        return Record("recommend_log", key, b"{latency_ms: 12, oops", None, None, "not_json")
    if kind == "not_object":
        return Record("recommend_log", key, b"[1, 2, 3]", None, None, "not_object")
    if kind == "missing_field":
        return Record("recommend_log", key, _encode({k: v for k, v in good.items() if k != "created_at"}), None, None, "schema")
    if kind == "wrong_type":
        return Record("recommend_log", key, _encode({**good, "latency_ms": "fast"}), None, None, "schema")
    if kind == "unknown_topic":
        return Record("editor_unknown_events", key, _encode(good), None, None, "unknown_topic")
    return Record("recommend_log", key, _encode({**good, "blob": "x" * (1024 * 1024 + 10)}), None, None, "too_large")

"""The seven log schemas (A..F, I) of events.md and the registry that ties code, collection, key and model.

Category, intensity and language fields are plain strings on purpose: values outside the
vocabularies are stored and then left out of the profile counts (pipeline.md), not rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from sentencify import contract
from sentencify.schemas.common import EventModel, Float32Vector, ScoreMap, Timestamp, UnitInterval

DEFAULT_EMBEDDING_DIM = 384


class RecoOption(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    category: str | None = None
    strength: str | None = None
    score: float | None = None


class _Scoring(EventModel):
    """Scoring fields shared by A and I."""

    P_vec: ScoreMap | None = None
    P_rule: ScoreMap | None = None
    P_doc: ScoreMap | None = None
    P_user: ScoreMap | None = None
    P_cluster: ScoreMap | None = None
    weight_vec: float | None = None
    weight_rule: float | None = None
    weight_doc: float | None = None
    weight_user: float | None = None
    weight_cluster: float | None = None
    cache_hit_macro: bool | None = None
    cache_hit_user: bool | None = None
    cache_hit_cluster: bool | None = None
    model_version: str | None = None
    api_version: str | None = None


class LogA(_Scoring):
    """A `editor_recommend_options`: a recommendation shown."""

    insert_id: str
    recommend_session_id: str
    doc_id: str
    context_hash: str
    created_at: Timestamp
    user_id: str | None = None
    reco_category_input: str | None = None
    reco_options: list[RecoOption] | None = None
    doc_maturity_score: UnitInterval | None = None
    applied_weight_doc: UnitInterval | None = None
    embedding_version: str | None = None
    schema_version: str | None = None


class LogB(EventModel):
    """B `editor_run_paraphrasing`: a paraphrase run."""

    insert_id: str
    recommend_session_id: str
    source_recommend_event_id: str
    created_at: Timestamp
    user_id: str | None = None
    doc_id: str | None = None
    target_category: str | None = None
    target_intensity: str | None = None
    target_language: str | None = None
    response_time_ms: float | None = Field(None, ge=0)
    llm_provider: str | None = None
    paraphrase_llm_version: str | None = None


class LogC(EventModel):
    """C `editor_selected_paraphrasing`: the writer's final choice."""

    insert_id: str
    recommend_session_id: str
    source_recommend_event_id: str
    was_accepted: bool
    created_at: Timestamp
    user_id: str | None = None
    doc_id: str | None = None
    selected_option_index: int | None = Field(None, ge=0)
    total_paraphrasing_sentence_count: int | None = Field(None, ge=0)
    correction_history_id: str | None = None
    paraphrase_llm_version: str | None = None


class LogD(EventModel):
    """D `correction_history`: a ground-truth correction."""

    correction_history_id: str
    created_at: Timestamp
    user: str | None = None
    field: str | None = None
    intensity: str | None = None
    user_prompt: str | None = None
    input_sentence: str | None = None
    output_sentences: list[str] | None = None
    selected_index: int | None = Field(None, ge=0)


class LogE(EventModel):
    """E `context_block`: the text window around a selection, with its embedding."""

    context_hash: str
    doc_id: str
    created_at: Timestamp
    user_id: str | None = None
    selected_text: str | None = None
    context_prev: str | None = None
    context_next: str | None = None
    context_preview: str | None = None
    context_full: str | None = None
    embedding_v1: Float32Vector | None = None  # finite float32 values (events.md 'Bad input')
    embedding_version: str | None = None
    source: str | None = None

    @model_validator(mode="after")
    def _embedding_length(self, info: ValidationInfo) -> LogE:
        # Only v1 has a known length; an empty embedding is allowed (the ETL flags it).
        if self.embedding_v1 and (self.embedding_version or "v1") == "v1":
            expected = (info.context or {}).get("embedding_dim", DEFAULT_EMBEDDING_DIM)
            if len(self.embedding_v1) != expected:
                raise ValueError(f"embedding_v1 must have {expected} values (EMBEDDING_DIM), got {len(self.embedding_v1)}")
        return self


class LogF(EventModel):
    """F `document_context_cache`: one macro (whole-document) analysis result."""

    insert_id: str
    doc_id: str
    last_updated: Timestamp
    macro_topic: str | None = None
    macro_category_hint: str | None = None
    valid_until: Timestamp | None = None
    diff_ratio: UnitInterval | None = None
    invalidated_by_diff: bool | None = None
    macro_llm_version: str | None = None


class LogI(_Scoring):
    """I `recommend_log`: scoring details and latency of one recommendation."""

    insert_id: str
    recommend_session_id: str
    created_at: Timestamp
    latency_ms: float = Field(ge=0)
    user_id: str | None = None
    doc_id: str | None = None


@dataclass(frozen=True)
class EventType:
    code: str
    name: str  # collection name; topic = TOPIC_PREFIX + name
    key_field: str  # becomes the Mongo `_id`
    model: type[EventModel]

    def topic(self, prefix: str) -> str:
        return contract.topic(prefix, self.name)


EVENT_TYPES: tuple[EventType, ...] = (
    EventType("A", contract.RAW_COLLECTIONS["A"], "insert_id", LogA),
    EventType("B", contract.RAW_COLLECTIONS["B"], "insert_id", LogB),
    EventType("C", contract.RAW_COLLECTIONS["C"], "insert_id", LogC),
    EventType("D", contract.RAW_COLLECTIONS["D"], "correction_history_id", LogD),
    EventType("E", contract.RAW_COLLECTIONS["E"], "context_hash", LogE),
    EventType("F", contract.RAW_COLLECTIONS["F"], "insert_id", LogF),
    EventType("I", contract.RAW_COLLECTIONS["I"], "insert_id", LogI),
)
BY_CODE: dict[str, EventType] = {t.code: t for t in EVENT_TYPES}
BY_NAME: dict[str, EventType] = {t.name: t for t in EVENT_TYPES}


def topics(prefix: str) -> dict[str, EventType]:
    """Topic name -> event type, for one topic prefix."""
    return {t.topic(prefix): t for t in EVENT_TYPES}

"""Documents the Airflow chain writes: training examples (H), user profiles (G), ETL rejects."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "2.0"

ConsistencyReason = Literal[
    "source_mismatch",
    "time_gap",
    "time_order",
    "multiple_a",
    "missing_context",
    "missing_run",
    "missing_ground_truth",
]
RejectReason = Literal["outcome_contradiction", "orphan"]


class MatchMetrics(BaseModel):
    is_category_match: bool
    is_intensity_match: bool | None
    match_score: int


class TrainingExample(BaseModel):
    """H `training_examples`: one per recommend_session_id that has an A; `_id` = example_id."""

    model_config = ConfigDict(extra="forbid")

    example_id: str
    recommend_session_id: str
    user_id: str | None
    doc_id: str
    context_hash: str
    source_recommend_event_id: str
    reco_category_input: str | None
    reco_scores_vec: dict[str, float] | None
    reco_scores_rule: dict[str, float] | None
    reco_scores_doc: dict[str, float] | None
    doc_maturity_score: float | None
    applied_weight_doc: float | None
    recommended_intensity: str | None
    context_embedding: list[float]
    embedding_version: str | None
    macro_category_hint: str | None
    executed_target_category: str | None
    executed_target_intensity: str | None
    executed_target_language: str | None
    was_accepted: bool
    selected_option_index: int | None
    groundtruth_field: str | None
    groundtruth_intensity: str | None
    groundtruth_user_prompt: str | None
    groundtruth_selected_index: int | None
    final_category: str | None
    final_intensity: str | None
    match_metrics: MatchMetrics
    consistency_flag: Literal["high", "low"]
    consistency_reasons: list[ConsistencyReason]
    created_at: datetime
    processed_at: datetime
    schema_version: str = SCHEMA_VERSION


class UserProfile(BaseModel):
    """G `user_profile`: `_id` = user_id; also cached in Redis as `user_profile:{user_id}`."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    preferred_category_vector: list[float] = Field(min_length=7, max_length=7)
    preferred_strength_vector: list[float] = Field(min_length=3, max_length=3)
    preferred_language_vector: list[float] = Field(min_length=5, max_length=5)
    recommend_accept_rate: float = Field(ge=0.0, le=1.0)
    paraphrase_execution_count: int = Field(ge=0)
    embedding_interaction_count: int = Field(ge=0)
    user_embedding_v1: list[float]
    updated_at: datetime
    schema_version: str = SCHEMA_VERSION


class EtlReject(BaseModel):
    """`etl_rejects`: a session the ETL refused to turn into an example, and why."""

    recommend_session_id: str
    reason: RejectReason
    insert_ids: list[str] = Field(default_factory=list)
    correction_history_id: str | None = None
    source_recommend_event_id: str | None = None
    detected_at: datetime

"""The contract's names, in one place below every package that uses them: MongoDB collections,
Kafka topics, Redis keys and the PostgreSQL schema (spec: events.md "Topics and collections",
pipeline.md Steps 1-4, interfaces.md "Settings").

Plain constants and string rules, no imports: `consumer` (which writes the raw collections and
the dead letters) and `sentencify.steps` (which read them and write the derived stores) both
depend on this module and on neither each other (`scripts/check_import_cycles.py` enforces it).
"""

from __future__ import annotations

# events.md: one topic and one MongoDB collection per event type, by its code.
RAW_COLLECTIONS: dict[str, str] = {
    "A": "editor_recommend_options",
    "B": "editor_run_paraphrasing",
    "C": "editor_selected_paraphrasing",
    "D": "correction_history",
    "E": "context_block",
    "F": "document_context_cache",
    "I": "recommend_log",
}
A, B, C, D, E, F, I = (RAW_COLLECTIONS[code] for code in "ABCDEFI")  # noqa: E741 (the contract's event codes)

DEAD_LETTERS = "dead_letters"  # events.md "Bad input": records that can never be stored as a log
TRAINING_EXAMPLES = "training_examples"  # pipeline.md Step 1 (H)
ETL_REJECTS = "etl_rejects"  # pipeline.md Step 1: outcome_contradiction and orphan
USER_PROFILE = "user_profile"  # pipeline.md Step 2 (G)
REDIS_PROFILE_KEY = "user_profile:{user_id}"  # pipeline.md Step 2: the profile's JSON copy in Redis

DEFAULT_TOPIC_PREFIX = "sentencify."  # interfaces.md, TOPIC_PREFIX
PG_SCHEMA = "sentencify"  # pipeline.md Step 4: the views and fact tables live in this schema

# Redis keys the consumer publishes and the views step reads (the dashboard's consumer panels).
CONSUMER_STATUS_KEY_PREFIX = "sentencify:consumer:"  # + group:host:pid -> the consumer's status JSON
CONSUMER_LAG_KEY_PREFIX = "sentencify:consumer_lag:"  # + group -> the group's lag JSON


def topic(prefix: str, collection: str) -> str:
    """A raw collection's topic: TOPIC_PREFIX + the collection's name (events.md)."""
    return prefix + collection


def redis_profile_key(user_id: str) -> str:
    """The Redis key of one user's profile (pipeline.md Step 2)."""
    return REDIS_PROFILE_KEY.format(user_id=user_id)

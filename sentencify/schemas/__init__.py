"""Pydantic models of every stored document: the logs (events.md) and the derived collections (pipeline.md)."""

from sentencify.schemas.common import CATEGORIES, INTENSITIES, LANGUAGES, Timestamp, to_utc_datetime
from sentencify.schemas.derived import EtlReject, TrainingExample, UserProfile
from sentencify.schemas.events import (
    BY_CODE,
    BY_NAME,
    EVENT_TYPES,
    EventType,
    LogA,
    LogB,
    LogC,
    LogD,
    LogE,
    LogF,
    LogI,
    topics,
)

__all__ = [
    "BY_CODE",
    "BY_NAME",
    "CATEGORIES",
    "EVENT_TYPES",
    "INTENSITIES",
    "LANGUAGES",
    "EtlReject",
    "EventType",
    "LogA",
    "LogB",
    "LogC",
    "LogD",
    "LogE",
    "LogF",
    "LogI",
    "Timestamp",
    "TrainingExample",
    "UserProfile",
    "to_utc_datetime",
    "topics",
]

"""Field types shared by every schema: timestamps, vocabularies, bounded scores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

# Fixed order: it is the order of the profile vectors (events.md, "Vocabularies").
CATEGORIES: tuple[str, ...] = (
    "thesis",
    "report",
    "article",
    "email",
    "marketing",
    "customer_service",
    "general",
)
INTENSITIES: tuple[str, ...] = ("weak", "moderate", "strong")
LANGUAGES: tuple[str, ...] = ("ko", "en", "ja", "zh", "es")

# BSON dates keep milliseconds; truncating here keeps a validated record equal to what is stored.
_MS = 1000


def to_utc_datetime(value: Any) -> datetime:
    """ISO-8601 string (no offset means UTC) or integer epoch milliseconds -> aware UTC datetime."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):  # bool is an int subclass; True is not a timestamp
        raise ValueError("timestamp must be an ISO-8601 string or integer epoch milliseconds, got a boolean")
    elif isinstance(value, int):
        try:
            parsed = datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch milliseconds out of range: {value}") from None
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
    else:
        raise ValueError(f"timestamp must be an ISO-8601 string or integer epoch milliseconds, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+09:00: its UTC value is before year 1
        raise ValueError(f"timestamp {value!r} has no UTC value between years 1 and 9999") from None
    return parsed.replace(microsecond=parsed.microsecond // _MS * _MS)


Timestamp = Annotated[
    datetime,
    BeforeValidator(to_utc_datetime),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time", "description": "ISO-8601; no offset means UTC"},
                {"type": "integer", "description": "epoch milliseconds"},
            ]
        }
    ),
]

UnitInterval = Annotated[float, Field(ge=0.0, le=1.0)]
ScoreMap = dict[str, float]


class EventModel(BaseModel):
    """Base of the log schemas: strict types, unknown extra fields kept as sent."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)

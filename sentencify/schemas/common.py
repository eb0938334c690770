"""Field types shared by every schema: timestamps, vocabularies, bounded scores."""

from __future__ import annotations

import math
import re
import struct
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

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

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# BSON dates keep milliseconds; truncating here keeps a validated record equal to what is stored.
_MS = 1000
# A leap second: `hh:mm:60`, extended or basic format, with an optional fraction and offset.
_LEAP_SECOND = re.compile(r"^(?P<head>.+[T ]\d\d(?P<sep>:?)\d\d(?P=sep))60(?:[.,]\d+)?(?P<tail>[+-].*)?$")


def _parse_iso(text: str, value: str) -> datetime:
    """ISO-8601 text -> datetime; a leap second (23:59:60, any offset) is the last millisecond of its minute.

    events.md "Bad input": `23:59:60` is stored as `23:59:59.999` in its zone, then converted to UTC.
    Second 60 is accepted where a leap second can fall: 23:59 in the timestamp's own zone or in UTC."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        leap = _LEAP_SECOND.match(text)
        if leap is None:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
    try:
        parsed = datetime.fromisoformat(f"{leap['head']}59.999{leap['tail'] or ''}")
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
    try:
        utc = parsed.astimezone(UTC) if parsed.tzinfo else parsed
    except OverflowError:  # no UTC value: refused by the caller with its own words
        utc = parsed
    if (parsed.hour, parsed.minute) != (23, 59) and (utc.hour, utc.minute) != (23, 59):
        raise ValueError(f"not an ISO-8601 timestamp: {value!r} (second 60 is only a leap second at 23:59)")
    return parsed


def to_utc_datetime(value: Any) -> datetime:
    """ISO-8601 string (no offset means UTC) or integer epoch milliseconds -> aware UTC datetime, in ms.

    Raises ValueError when the value is neither, or has no UTC value in years 1..9999 (events.md "Fields")."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):  # bool is an int subclass; True is not a timestamp
        raise ValueError("timestamp must be an ISO-8601 string or integer epoch milliseconds, got a boolean")
    elif isinstance(value, int):
        try:  # exact: `fromtimestamp(value / 1000)` goes through a double, 1 ms off past year 2100 and before 1970
            parsed = _EPOCH + timedelta(milliseconds=value)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch milliseconds out of range: {value}") from None
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = _parse_iso(text, value)
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

FLOAT32_MAX = 3.4028234663852886e38


def float32_vector(values: list[float]) -> list[float]:
    """A vector whose values are all finite and representable as float32 (what vector stores keep).

    events.md "Bad input": anything else makes the record bad. A value is representable when it
    rounds to a finite float32 (|x| <= FLOAT32_MAX after rounding); values stay as sent (float64).
    Raises ValueError naming the first bad position."""
    try:
        struct.pack(f"<{len(values)}f", *values)  # rounds each value, OverflowError past FLOAT32_MAX
        if all(map(math.isfinite, values)):
            return values
    except OverflowError:
        pass
    for index, x in enumerate(values):
        try:
            struct.pack("<f", x)
        except OverflowError:
            raise ValueError(f"value {index} ({x!r}) is outside float32 (|x| <= {FLOAT32_MAX!r})") from None
        if not math.isfinite(x):
            raise ValueError(f"value {index} ({x!r}) is not finite")
    return values


Float32Vector = Annotated[list[float], AfterValidator(float32_vector)]
UnitInterval = Annotated[float, Field(ge=0.0, le=1.0)]
ScoreMap = dict[str, float]


class EventModel(BaseModel):
    """Base of the log schemas: strict types, unknown extra fields kept as sent."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)

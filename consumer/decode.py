"""Decode: raw Kafka value bytes -> JSON object."""

from __future__ import annotations

from typing import Any

import orjson

from consumer.records import BadRecord


def decode(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Delivery: pure; returns the JSON object or raises BadRecord (never drops silently)."""
    if value is None:
        raise BadRecord("empty", "record has no value (tombstone)")
    if len(value) > max_bytes:
        raise BadRecord("too_large", f"record is {len(value)} bytes, over the {max_bytes}-byte limit (MAX_RECORD_BYTES)")
    try:
        obj = orjson.loads(value)  # strict RFC 8259: invalid UTF-8, NaN and Infinity are errors
    except orjson.JSONDecodeError as exc:
        raise BadRecord("not_json", f"value is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadRecord("not_object", f"value is JSON but not an object (got {type(obj).__name__})")
    return obj

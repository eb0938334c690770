"""Storable: what MongoDB can store, checked before writing, so one record never fails a batch.

The local server is more lenient than MongoDB (it takes 260 levels of nesting); these are
MongoDB's documented limits (https://www.mongodb.com/docs/manual/reference/limits/).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from consumer.records import BadRecord

MAX_DEPTH = 100  # "no more than 100 levels of nesting"; the document itself is level 1
MAX_BSON_BYTES = 16 * 1024 * 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# JSON grows at most ~8x into BSON (`0,` -> type, key "1234567", int32); below this, no need to measure.
_SIZE_CHECK_FROM = MAX_BSON_BYTES // 8
# What the consumer adds (`ingested_at`, `_kafka`, `_id`), with room to spare.
ENRICHMENT_BYTES = 1024


def _where(path: list[str]) -> str:
    return ".".join(path) or "(record)"


def _walk(value: Any, path: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BadRecord("unstorable", f"{_where(path)}: nesting deeper than {MAX_DEPTH} levels (MongoDB's limit)")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadRecord("unstorable", f"{_where(path)}: field name {key!r} is not a string")
            if "\x00" in key:
                raise BadRecord("unstorable", f"{_where([*path, repr(key)])}: field name contains a NUL character")
            if type(item) in (str, float, bool) or item is None:  # the common leaves, fast
                continue
            path.append(key)
            _walk(item, path, depth + 1)
            path.pop()
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if type(item) in (str, float, bool) or item is None:
                continue
            path.append(str(index))
            _walk(item, path, depth + 1)
            path.pop()
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise BadRecord("unstorable", f"{_where(path)}: integer {value} is outside signed 64 bits")
    elif isinstance(value, datetime):
        return  # a Python datetime is always in years 1..9999 (the schema converted it to UTC)


def check_storable(doc: dict[str, Any], raw_size: int) -> None:
    """Delivery: pure; returns when MongoDB can store `doc` once enriched, else raises BadRecord naming the field."""
    _walk(doc, [], 1)
    if raw_size >= _SIZE_CHECK_FROM:
        import bson

        try:
            size = len(bson.encode(doc)) + ENRICHMENT_BYTES
        except (bson.errors.InvalidDocument, OverflowError, ValueError) as exc:
            raise BadRecord("unstorable", f"cannot be encoded as BSON: {exc}") from None
        if size > MAX_BSON_BYTES:
            raise BadRecord("unstorable", f"document would be {size} bytes once stored, over MongoDB's 16 MiB limit")

"""PostgreSQL: what the views step may write, and which errors are about the rows written.

Rules (pipeline.md, opening; PostgreSQL 15 manual):
- text: PostgreSQL text cannot hold NUL (0x00), nor can it hold a lone UTF-16 surrogate (not
  UTF-8): each becomes U+FFFD, the Unicode replacement character. The same inside jsonb, which
  refuses the escape \\u0000 ("unsupported Unicode escape sequence", manual 8.14).
- text longer than `TEXT_BYTES` UTF-8 bytes is cut to a prefix, "…" and 16 hex digits of its
  SHA-256 (distinct values stay distinct): a B-tree entry holds at most 2704 bytes, so a longer
  id, category or reason in a key column makes PostgreSQL refuse the row ("index row size
  exceeds maximum"), and a dashboard label that long is read by nobody.
- jsonb: strict JSON only (jsonb refuses NaN and Infinity tokens): a non-finite float becomes null.
- double precision: a non-finite value is not a measurement; the caller leaves it out (the fact
  row counts records whose value is finite).
- timestamps: timestamptz holds 4713 BC .. 294276 AD, a superset of the years 1..9999 a MongoDB
  record may carry after ingestion; nothing to do.
- aggregates: the SQL in sql_views/ computes means through numeric (arbitrary precision), so
  finite inputs cannot overflow a float8 sum (PostgreSQL raises "value out of range: overflow").
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import date, datetime
from typing import Any

_NOT_STORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"
TEXT_BYTES = 1000


def text(value: str) -> str:
    """`value` with every NUL and lone surrogate replaced by U+FFFD, cut as the module says when
    longer than TEXT_BYTES bytes of UTF-8."""
    if _NOT_STORABLE.search(value):
        value = _NOT_STORABLE.sub(REPLACEMENT, value)
    if len(value) * 4 > TEXT_BYTES and len(encoded := value.encode()) > TEXT_BYTES:
        digest = hashlib.sha256(encoded).hexdigest()[:16]
        prefix = encoded[: TEXT_BYTES - 64].decode("utf-8", "ignore")  # cut on a character boundary
        value = f"{prefix}…{digest}"
    return value


class JsonText(str):
    """JSON text from `jsonb`: already storable, and never cut as text (a cut document is not JSON).
    A str subclass: `json.loads` reads it, orjson wants `str(text)`."""


def value(v: Any) -> Any:
    """One column value made storable: text as `text` (JSON text from `jsonb` as it is), lists
    element-wise, the rest unchanged."""
    if isinstance(v, JsonText):
        return str(v)  # a plain str for the drivers
    if isinstance(v, str):
        return text(v)
    if isinstance(v, list | tuple):
        return [value(x) for x in v]
    return v


def row(values: tuple) -> tuple:
    return tuple(value(v) for v in values)


def _json_safe(v: Any) -> Any:
    if isinstance(v, str):
        return text(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {text(str(k)): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set):
        return [_json_safe(x) for x in v]
    if isinstance(v, datetime | date):
        return v.isoformat()
    if v is None or isinstance(v, bool | int):
        return v
    return text(str(v))


def jsonb(v: Any) -> JsonText:
    """JSON text that a jsonb column accepts: NUL-free strings (each cut as `text` says), finite
    numbers, ISO-8601 times. The document as a whole is not cut: `row` passes it through."""
    return JsonText(json.dumps(_json_safe(v), allow_nan=False, separators=(",", ":")))


# Errors about the rows written (SQLSTATE class 22 data exception, class 23 integrity constraint
# violation, 54000), by class name so psycopg2 (the CLI) and psycopg 3 (Airflow's hook) both match.
# Anything else (connection lost, timeouts, permissions) is about the store: the run fails.
# ProgramLimitExceeded (54000: a row or index entry too large) is about the row too.
_DATA_ERRORS = {"DataError", "IntegrityError", "ProgramLimitExceeded"}


def is_data_error(exc: BaseException) -> bool:
    return any(cls.__name__ in _DATA_ERRORS for cls in type(exc).__mro__)

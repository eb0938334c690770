"""Decode: raw Kafka value bytes -> JSON object."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from consumer.records import BadRecord
from consumer.storable import INT64_MAX, INT64_MIN

# An integer literal outside signed 64 bits has at least 19 digits; only such records are read twice.
_LONG_DIGITS = re.compile(rb"\d{19}")


def decode(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Delivery: pure; returns the JSON object or raises BadRecord (never drops silently).

    Strict RFC 8259 (orjson): invalid UTF-8, NaN and Infinity are `not_json`; a lone surrogate
    escape is `not_json` with words saying so. An integer literal outside signed 64 bits is
    `unstorable` however the parser represents it (events.md "Bad input": 2^64 is out of range,
    not the double 1.8e19); a float literal such as 1.8e19 stays valid.
    """
    if value is None:
        raise BadRecord("empty", "record has no value (tombstone)")
    if len(value) > max_bytes:
        raise BadRecord("too_large", f"record is {len(value)} bytes, over the {max_bytes}-byte limit (MAX_RECORD_BYTES)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if _LONG_DIGITS.search(value):  # orjson refuses an integer literal past a double (10^309) as "infinity"
            check_integer_literals(value)
        raise BadRecord("not_json", _not_json(exc)) from None
    if not isinstance(obj, dict):
        raise BadRecord("not_object", f"value is JSON but not an object (got {type(obj).__name__})")
    if _LONG_DIGITS.search(value):
        check_integer_literals(value)
    return obj


def _not_json(exc: orjson.JSONDecodeError) -> str:
    if "surrogate" in str(exc):
        return (
            f"value is not JSON that can be stored: a string holds a lone UTF-16 surrogate escape "
            f"(such as \\ud800 without its pair), which is no Unicode character and has no UTF-8 form ({exc}); "
            "the producer must escape whole characters"
        )
    return f"value is not JSON: {exc}"


def check_integer_literals(value: bytes) -> None:
    """Raise BadRecord `unstorable` naming the first field whose integer literal is outside signed 64 bits.

    orjson reads such a literal as a double (2^64 -> 1.8446744073709552e19), or refuses it past a
    double's range; the standard library reads integer literals exactly, so the record is read
    again with it (only when it holds a run of 19 digits, so this costs nothing for ordinary
    records). Literals are compared by their digits, so one of any length (past Python's 4300-digit
    int conversion limit too) is named. Returns when there is none, or when the stdlib cannot read
    the value either (NaN, Infinity, invalid JSON: the caller says it is not JSON)."""
    try:
        exact = json.loads(value, parse_float=lambda _: 0.0, parse_int=_parse_int, parse_constant=_no_constant)
    except (RecursionError, ValueError):  # nested past the stdlib's limit (refused by the nesting check), or not JSON
        return
    found = _big_int(exact, [])
    if found is not None:
        path, number = found
        raise BadRecord(
            "unstorable",
            f"{'.'.join(path) or '(record)'}: integer {number} is outside signed 64 bits (MongoDB's integers); "
            "send it as a string, or as a float literal if a float is meant",
        )


class _OutOfRange(str):
    """An integer literal outside signed 64 bits, kept as its text (shortened when long)."""


def _parse_int(text: str) -> int | _OutOfRange:
    if len(text.lstrip("-")) <= 19 and INT64_MIN <= (n := int(text)) <= INT64_MAX:
        return n
    return _OutOfRange(text if len(text) <= 40 else f"{text[:20]}...({len(text.lstrip('-'))} digits)")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _big_int(value: Any, path: list[str]) -> tuple[list[str], str] | None:
    if isinstance(value, _OutOfRange):
        return path, value
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for key, item in items:
        found = _big_int(item, [*path, key])
        if found is not None:
            return found
    return None

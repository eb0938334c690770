"""Redis: the JSON values the online recommender reads (`user_profile:{user_id}`).

Rule: strict RFC 8259 JSON, as Go, Java, JavaScript and orjson read it: no NaN or Infinity, ever
(`allow_nan=False` raises instead of writing them), and no lone UTF-16 surrogate in a string
(strict parsers refuse the escape; it becomes U+FFFD). A NUL in a string is valid JSON (escaped as
\\u0000) and kept. Numbers are made finite where they are computed (`finite_mean`): a finite input
never gives a non-finite output.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(v: Any) -> Any:
    if isinstance(v, str):
        return _SURROGATE.sub("\ufffd", v) if _SURROGATE.search(v) else v
    if isinstance(v, dict):
        return {_clean(str(k)): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def dumps(value: Any) -> str:
    """Strict JSON text of `value`. Raises ValueError on a non-finite float (the caller quarantines
    the document: a rule upstream failed to keep it finite)."""
    return json.dumps(_clean(value), allow_nan=False, separators=(",", ":"))


def finite_mean(column: Sequence[float]) -> float:
    """The mean of finite floats, finite whatever their size (the plain sum of two 1.7e308 is inf).

    The plain `sum(column) / n` whenever that sum is finite (the same bits as before this rule,
    and far cheaper than `math.fsum`; finite, since |sum / n| <= |sum|); when it overflowed,
    `math.fsum` (exact), and past that the terms divided first, kept within [min, max] of the
    inputs, where the true mean lies, so rounding cannot push it past the largest finite float.
    Raises ValueError on an empty column."""
    n = len(column)
    if n == 0:
        raise ValueError("the mean of no values")
    total = sum(column)
    if math.isfinite(total):
        return total / n
    try:
        mean = math.fsum(column) / n
    except OverflowError:
        try:
            mean = math.fsum(x / n for x in column)
        except OverflowError:
            mean = max(column)
    return min(max(mean, min(column)), max(column))


def finite(values: Sequence[Any]) -> bool:
    """Every value a finite number (bool is not a number here). A finite plain sum answers at once
    (a NaN or an infinity would make it non-finite); only a sum that overflowed is looked at one
    value at a time."""
    try:
        if math.isfinite(sum(values)):  # also refuses a str among them (TypeError)
            return not any(isinstance(x, bool) for x in values[:1])
    except TypeError:
        return False
    return all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in values)


def set_bytes(item: tuple[str, str]) -> int:
    """One key and value's bytes in a Redis request (RESP: `$<length>\\r\\n<bytes>\\r\\n` each),
    at most: what `stores.batching` bounds a request by (REDIS_MAX_REQUEST_BYTES)."""
    key, value = item
    return len(key.encode()) + len(value.encode()) + 32


def maybe_too_large(exc: BaseException) -> bool:
    """A request Redis refused for its size or lost the connection on: over `proto-max-bulk-len`
    Redis answers "Protocol error: invalid bulk length"; over `client-query-buffer-limit` (and a
    managed service's request limit) it closes the connection; a timeout may be the size too.
    The request is sent in halves (`stores.batching.write_split`); one key that still fails is a
    store error."""
    import redis

    if isinstance(exc, redis.exceptions.ResponseError):
        text = str(exc).lower()
        return "protocol error" in text or "too large" in text or "too big" in text or ("max" in text and "buffer" in text)
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)

"""Qdrant: vectors it can store as float32, and which errors are about the points written.

Rule: the collection measures cosine similarity, for which a vector's length does not matter, and
Qdrant keeps float32 unit vectors (it normalises on upsert, in float32: a vector of values near
float32's largest, 3.4e38, overflows its norm and is stored as zeros; a float64 value past
float32's range is stored as NaN). So the point's vector is the embedding normalised here, in
float64, after scaling by its largest magnitude when the plain norm overflows or is subnormal
(5e-324 and 5e-324 have the norm 5e-324, not 7e-324): any finite vector becomes a unit vector (every
component in [-1, 1]) with the same direction, which float32 holds. A zero vector stays zero
(Qdrant keeps it as is). A vector with a NaN or an infinity has no direction: `unit_vector`
returns None and the session is quarantined (records stored before ingestion refused such
embeddings, events.md "Bad input", may still hold one).
Payloads are JSON objects: strings (NUL included) and integers within 64 bits are kept as they are.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any


def unit_vector(values: Sequence[float]) -> list[float] | None:
    """`values` scaled to length 1 (float64), or None when one of them is not a finite number."""
    norm = math.hypot(*values)  # C, and exact to within an ulp; inf only when the norm overflows
    if sys.float_info.min <= norm < math.inf:  # a subnormal norm keeps few bits: scaled below
        return [x / norm for x in values]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in values):
        return None
    largest = max((abs(x) for x in values), default=0.0)
    if largest == 0:
        return [0.0] * len(values)
    scaled = [x / largest for x in values]
    norm = math.sqrt(math.fsum(x * x for x in scaled))
    return [x / norm for x in scaled]


def is_data_error(exc: BaseException) -> bool:
    """A point Qdrant refused (HTTP 400/422, or local mode's ValueError), not a Qdrant that is away
    nor a collection that is gone (`collection_gone`)."""
    if collection_gone(exc):
        return False
    status = getattr(exc, "status_code", None)
    if status is not None:
        return status in (400, 422)
    return isinstance(exc, ValueError | TypeError)


def collection_gone(exc: BaseException) -> bool:
    """The collection was dropped under the writer (HTTP 404, or local mode's "Collection ... not
    found"): the store was lost, not the point refused (pipeline.md, "Derived stores agree")."""
    status = getattr(exc, "status_code", None)
    text = str(exc)
    return status == 404 or ("ollection" in text and ("not found" in text or "doesn't exist" in text))


# The longest JSON a float64 takes as Python (the REST client) writes it, with its comma:
# "-1.2345678901234567e-05," (shortest repr: 17 significant digits, a sign, a dot, an exponent).
FLOAT_JSON_BYTES = 24
POINT_OVERHEAD_BYTES = 128  # {"id":"<uuid>","vector":[],"payload":{}} and the batch's share of the envelope


def point_bytes(vector: Sequence[float], payload: dict[str, Any]) -> int:
    """An upper bound on one point's bytes in an upsert request (JSON, as the REST client sends it):
    what `stores.batching` bounds requests by (Qdrant's 32 MiB default, `service.max_request_size_mb`).
    The vector is counted at its longest, the payload exactly."""
    return POINT_OVERHEAD_BYTES + FLOAT_JSON_BYTES * len(vector) + len(json.dumps(payload, default=str))


def maybe_too_large(exc: BaseException) -> bool:
    """An upsert Qdrant refused for its size (413), or one that timed out or lost its connection
    (a server closes the connection on a request over its limit while the client still sends:
    the client sees a timeout, qdrant/qdrant-client#463). The request is sent in halves
    (`stores.batching.write_split`); one point that still fails is a store error."""
    status = getattr(exc, "status_code", None)
    if status is not None:
        return status == 413
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException

    return isinstance(exc, ResponseHandlingException | httpx.TransportError | TimeoutError | ConnectionError)

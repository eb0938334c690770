"""Requests bounded in bytes as well as in items, and the split of a request a store refused for its size.

Rule (pipeline.md "Bounds at any size"): every request to a store is bounded in bytes, with the
store's documented limit as the default: Qdrant's 32 MiB request (`service.max_request_size_mb`),
MongoDB's 48 MB message (`maxMessageSizeBytes`; a document 16 MB), and a Redis request no larger
than a managed service takes (open-source Redis takes 512 MB per argument, `proto-max-bulk-len`,
and 1 GB per request, `client-query-buffer-limit`; managed services refuse far less). The sizes
are estimates of the serialized request, never below it.

A store that refuses an oversized request, or times out on it (a Qdrant server closes the
connection while the client still sends: the client sees a timeout), is sent each half instead
(`write_split`), down to one item; one item that still fails is the store's error, not the
request's size, and is raised (never retried whole for ever).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("sentencify.batching")

T = TypeVar("T")

MIB = 1024 * 1024
QDRANT_REQUEST_BYTES = 32 * MIB  # Qdrant's default service.max_request_size_mb
MONGO_MESSAGE_BYTES = 48_000_000  # MongoDB's maxMessageSizeBytes
REDIS_REQUEST_BYTES = 8 * MIB  # under the ~10 MB managed Redis services accept per request


@dataclass(frozen=True)
class RequestBytes:
    """The largest request, in bytes, a step sends to each store (settings *_MAX_REQUEST_BYTES)."""

    mongo: int = MONGO_MESSAGE_BYTES
    redis: int = REDIS_REQUEST_BYTES
    qdrant: int = QDRANT_REQUEST_BYTES

    @classmethod
    def from_settings(cls, settings) -> RequestBytes:
        return cls(settings.mongo_max_request_bytes, settings.redis_max_request_bytes, settings.qdrant_max_request_bytes)


DEFAULT_LIMITS = RequestBytes()


def batches(items: Iterable[T], max_items: int, max_bytes: int, size_of: Callable[[T], int]) -> Iterator[list[T]]:
    """Consecutive batches of `items`, in order, none empty: each has at most `max_items` items and
    a total `size_of` (bytes) of at most `max_bytes`, except a batch of one item that alone exceeds
    `max_bytes` (it is sent alone, and the store judges it). Streams: holds one batch at a time."""
    if max_items < 1 or max_bytes < 1:
        raise ValueError(f"a batch needs room for an item: max_items={max_items}, max_bytes={max_bytes}")
    batch: list[T] = []
    total = 0
    for item in items:
        size = size_of(item)
        if batch and (len(batch) >= max_items or total + size > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += size
    if batch:
        yield batch


def write_split(items: list[T], write: Callable[[list[T]], None], maybe_too_large: Callable[[BaseException], bool]) -> int:
    """`write(items)`; when it raises an error `maybe_too_large` says the request's size may have
    caused (a refusal for size, a timeout), `write` each half instead, recursively. Returns the
    number of requests that succeeded. Raises the error of a single item (a store error), and at
    once any error that is not about size. `write` must be idempotent (a split request may have
    landed in part)."""
    try:
        write(items)
        return 1
    except Exception as exc:
        if len(items) <= 1 or not maybe_too_large(exc):
            raise
        log.warning(
            "a store refused or timed out on a request: sending it in halves",
            extra={"fields": {"items": len(items), "error": f"{type(exc).__name__}: {str(exc)[:200]}"}},
        )
    mid = len(items) // 2
    return write_split(items[:mid], write, maybe_too_large) + write_split(items[mid:], write, maybe_too_large)

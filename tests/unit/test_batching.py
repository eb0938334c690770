"""Requests bounded in bytes (sentencify.stores.batching; pipeline.md "Bounds at any size").

The helper's properties with hypothesis, then one test per store: batches of large documents (at
EMBEDDING_DIM 4096) measured as the store's client serializes them stay under the store's limit;
a request refused for its size is split, a single item's error is raised.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import bson
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from qdrant_client.http.api.points_api import jsonable_encoder
from qdrant_client.http.exceptions import ResponseHandlingException

from sentencify.steps import profiles, vectors
from sentencify.steps.fence import NO_FENCE
from sentencify.steps.quarantine import Quarantined
from sentencify.stores import batching, mongodb, redis_json
from sentencify.stores import qdrant as qdrant_rules

DIM = 4096


@given(
    sizes=st.lists(st.integers(0, 1000), max_size=200),
    max_items=st.integers(1, 50),
    max_bytes=st.integers(1, 3000),
)
def test_batches_keep_order_lose_nothing_and_stay_under_both_bounds(sizes, max_items, max_bytes):
    items = list(enumerate(sizes))
    out = list(batching.batches(items, max_items, max_bytes, lambda item: item[1]))
    assert [x for batch in out for x in batch] == items  # order kept, nothing lost or repeated
    for batch in out:
        assert 1 <= len(batch) <= max_items
        total = sum(size for _, size in batch)
        assert total <= max_bytes or (len(batch) == 1 and batch[0][1] > max_bytes)


@given(sizes=st.lists(st.integers(1, 100), min_size=1, max_size=100), max_bytes=st.integers(1, 300))
def test_batches_are_full_a_batch_ends_only_where_the_next_item_would_not_fit(sizes, max_bytes):
    out = list(batching.batches(sizes, 10**6, max_bytes, lambda size: size))
    for batch, following in itertools.pairwise(out):
        assert sum(batch) + following[0] > max_bytes


def test_batches_refuse_a_bound_with_no_room():
    with pytest.raises(ValueError):
        list(batching.batches([1], 0, 10, lambda x: x))


class TooLarge(Exception):
    pass


@given(n=st.integers(1, 300), limit=st.integers(1, 64))
def test_write_split_halves_a_refused_request_until_it_fits_and_writes_each_item_once(n, limit):
    written: list[int] = []

    def write(items: list[int]) -> None:
        if len(items) > limit:
            raise TooLarge(f"{len(items)} items")
        written.extend(items)

    batching.write_split(list(range(n)), write, lambda exc: isinstance(exc, TooLarge))
    assert written == list(range(n))


def test_write_split_raises_a_single_items_error_and_any_other_error_at_once():
    calls: list[int] = []

    def always_times_out(items: list[int]) -> None:
        calls.append(len(items))
        raise TooLarge("timed out")

    with pytest.raises(TooLarge):
        batching.write_split(list(range(8)), always_times_out, lambda exc: isinstance(exc, TooLarge))
    assert calls == [8, 4, 2, 1]  # halved down to one item, never the whole retried

    calls.clear()
    with pytest.raises(RuntimeError):
        batching.write_split(list(range(8)), lambda items: (calls.append(1), _raise(RuntimeError("down"))), lambda e: False)
    assert calls == [1]


def _raise(exc: BaseException) -> None:
    raise exc


# -- Qdrant: the upsert request as qdrant-client serializes it


def _example(i: int, rng: random.Random) -> dict:
    # Mixed magnitudes: small components have the longest JSON ("-1.2345678901234567e-05").
    embedding = [rng.uniform(-1, 1) * 10 ** -rng.randint(0, 6) for _ in range(DIM)]
    return {
        "_id": f"session-{i}",
        "recommend_session_id": f"session-{i}",
        "user_id": f"user-{i}",
        "doc_id": "d" * 200,
        "final_category": "email",
        "final_intensity": "strong",
        "executed_target_language": "en",
        "was_accepted": True,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "context_embedding": embedding,
    }


class RecordingQdrant:
    def __init__(self, refuse_over: int | None = None) -> None:
        self.requests: list[int] = []
        self.refuse_over = refuse_over

    def upsert(self, collection, points, wait):
        from qdrant_client import models

        size = len(jsonable_encoder(models.PointsList(points=points)).encode())
        if self.refuse_over is not None and size > self.refuse_over:
            raise ResponseHandlingException(TimeoutError("timed out"))  # what the client sees
        self.requests.append(size)


def test_qdrant_upserts_at_dim_4096_stay_under_the_request_limit():
    rng = random.Random(7)
    points = [(f"session-{i}", vectors.point(_example(i, rng))) for i in range(200)]
    limit = 2 * batching.MIB
    qc = RecordingQdrant()
    assert vectors.upsert(qc, "c", points, Quarantined("vectors"), max_bytes=limit) == 200  # type: ignore[arg-type]
    assert len(qc.requests) > 1 and max(qc.requests) <= limit
    # at the default limit and UPSERT_BATCH points, a dim-1536 batch (33.75 MB as JSON) would not fit
    assert qdrant_rules.point_bytes([0.0] * 1536, {}) * vectors.UPSERT_BATCH > batching.QDRANT_REQUEST_BYTES


def test_qdrant_a_request_that_times_out_for_its_size_is_sent_in_halves():
    rng = random.Random(8)
    points = [(f"session-{i}", vectors.point(_example(i, rng))) for i in range(40)]
    qc = RecordingQdrant(refuse_over=batching.MIB)  # the server's limit is lower than the setting
    quarantined = Quarantined("vectors")
    assert vectors.upsert(qc, "c", points, quarantined, max_bytes=8 * batching.MIB) == 40  # type: ignore[arg-type]
    assert not quarantined and max(qc.requests) <= batching.MIB


# -- MongoDB: the profile step's transactions


def test_mongodb_profile_batches_at_dim_4096_stay_under_the_message_limit(monkeypatch):
    rng = random.Random(9)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    built = []
    for i in range(60):
        profile = profiles.build_profile(f"u{i}", profiles.UserRecords([], [], set(), {}, {}, {}), now)
        profile["user_embedding_v1"] = [rng.uniform(-1, 1) for _ in range(DIM)]
        built.append((profile, profiles.redis_value(profile)))
    limit = batching.MIB
    out = list(batching.batches(built, mongodb.TRANSACTION_DOCS, limit - mongodb.COMMAND_OVERHEAD_BYTES, profiles._profile_bytes))
    assert len(out) > 1 and sum(len(b) for b in out) == 60
    for batch in out:  # the documents as the driver encodes them, plus the command's own fields
        assert sum(len(bson.encode(p)) + 16 for p, _ in batch) + mongodb.COMMAND_OVERHEAD_BYTES <= limit
    assert mongodb.document_bytes({"x": object()}) > mongodb.DOCUMENT_BYTES  # not encodable: refused, as too large


# -- Redis: the profile step's SETs (one request per batch)


class RecordingRedis:
    def __init__(self, refuse_over: int | None = None) -> None:
        self.requests: list[int] = []
        self.refuse_over = refuse_over

    def mset(self, values: dict[str, str]) -> None:
        # RESP: *<n>\r\n, then $<len>\r\n<bytes>\r\n per argument ("MSET", keys and values)
        args = [b"MSET", *(x.encode() for kv in values.items() for x in kv)]
        size = len(f"*{len(args)}\r\n") + sum(len(f"${len(a)}\r\n") + len(a) + 2 for a in args)
        if self.refuse_over is not None and size > self.refuse_over:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        self.requests.append(size)


def test_redis_requests_of_large_profiles_stay_under_the_limit_and_a_refused_one_is_split():
    rng = random.Random(10)
    values = {f"user_profile:u{i}": redis_json.dumps([rng.uniform(-1, 1) for _ in range(DIM)]) for i in range(50)}
    client = RecordingRedis()
    NO_FENCE.redis_set(client, values, max_bytes=batching.MIB)
    assert len(client.requests) > 1 and max(client.requests) <= batching.MIB

    client = RecordingRedis(refuse_over=batching.MIB)  # a service whose limit is below the setting
    NO_FENCE.redis_set(client, values, max_bytes=8 * batching.MIB)
    assert max(client.requests) <= batching.MIB and len(client.requests) >= 4


def test_redis_store_errors_are_not_taken_for_size():
    assert redis_json.maybe_too_large(redis.exceptions.ResponseError("Protocol error: invalid bulk length"))
    assert redis_json.maybe_too_large(redis.exceptions.TimeoutError("Timeout reading from socket"))
    assert not redis_json.maybe_too_large(redis.exceptions.ResponseError("FENCED a newer run of the step holds token 9"))
    assert not redis_json.maybe_too_large(redis.exceptions.ResponseError("NOAUTH Authentication required."))

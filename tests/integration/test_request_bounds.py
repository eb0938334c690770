"""Requests bounded in bytes against a real store's own limit (pipeline.md "Bounds at any size").

The test stack's Redis gets a managed service's kind of limit, restored afterwards: Redis's own
request limits lowered to 1 MB, their minimum. In Redis 7, `proto-max-bulk-len` and
`client-query-buffer-limit` bound one argument (and the unparsed buffer), while `maxmemory-clients`
bounds what a client's request takes once parsed (its arguments): a client past it is disconnected,
as a managed service refuses a request over its size. One request carrying the profiles of 40
users at EMBEDDING_DIM 4096 (about 3 MB) is refused, and the profile step still publishes every
profile, by its byte bound and by splitting what Redis refuses.
"""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import redis as redis_lib

from sentencify.steps.profiles import REDIS_KEY
from sentencify.steps.runner import run_step
from tests.chain_data import Logs, hour

DIM = 4096
USERS = 40
LIMIT = 1024 * 1024  # the smallest value Redis accepts for the first two


@pytest.fixture
def small_redis(redis):
    """The stack's Redis with its request limits lowered for this test, then restored."""
    limits = ("client-query-buffer-limit", "proto-max-bulk-len", "maxmemory-clients")
    saved = {k: redis.config_get(k)[k] for k in limits}
    for key in limits:
        redis.config_set(key, LIMIT)
    try:
        yield redis
    finally:
        fresh = redis_lib.Redis.from_url(_url(redis))
        for key, value in saved.items():
            fresh.config_set(key, value)
        fresh.close()


def _url(r) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def _sessions(mongo) -> list[str]:
    rng = random.Random(30)
    logs = Logs(mongo, embedding_dim=DIM)
    users = []
    for i in range(USERS):
        user, session = f"u{i}", f"s{i}"
        # small components: the longest JSON per number, as real embeddings have
        logs.e(10, session, embedding=[rng.uniform(-1, 1) * 10 ** -rng.randint(1, 5) for _ in range(DIM)])
        logs.a(10, session, user_id=user)
        logs.b(10, session, user_id=user)
        logs.c(10, session, user_id=user)
        users.append(user)
    return users


def test_profile_step_publishes_every_profile_through_a_redis_that_refuses_large_requests(settings, mongo, small_redis):
    users = _sessions(mongo)
    probe = redis_lib.Redis.from_url(_url(small_redis))
    with pytest.raises(redis_lib.exceptions.ConnectionError):  # the limit bites: one request of them all is refused
        probe.mset({f"probe:{i}": "x" * 80_000 for i in range(USERS)})
    probe.close()

    # The default byte bound (8 MiB) is above this Redis's limit: the refused requests are split.
    summary = run_step("profile", hour(10), settings)
    assert summary["users"] == USERS and "quarantined" not in summary
    for user in users:
        stored = json.loads(small_redis.get(REDIS_KEY.format(user_id=user)))
        assert len(stored["user_embedding_v1"]) == DIM
    assert mongo.user_profile.count_documents({}) == USERS

    # A bound set to the service's limit sends no request over it in the first place.
    small_redis.delete(*(REDIS_KEY.format(user_id=u) for u in users))
    summary = run_step("profile", hour(10), dataclasses.replace(settings, redis_max_request_bytes=LIMIT))
    assert summary["users"] == USERS
    assert all(small_redis.exists(REDIS_KEY.format(user_id=u)) for u in users)

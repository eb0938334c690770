"""Property: sessions whose fields take extreme but valid values go through the whole chain.

Hypothesis draws a few sessions per example with NUL in text, huge and tiny finite floats,
integers at the 64-bit edge, timestamps at the edges of years 1 and 9999, and empty or maximal
(float32's largest) vectors, stores them as the consumer does (its validator), and runs
etl -> profile -> vectors -> views through the runner against the real services. Every step
succeeds, nothing is quarantined (every value is valid), every store reads back strictly
(tests/store_checks.py), and the counts match. Examples are few: each one runs the whole chain.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import psycopg2
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pymongo import MongoClient

from sentencify.steps import quarantine
from sentencify.steps.runner import STEPS, run_step
from tests import store_checks
from tests.chain_data import Logs, at, hour
from tests.integration.test_store_limits import chain  # noqa: F401 (fixture)
from tests.integration.test_views import analytics  # noqa: F401 (fixture)

DIM = 384
INT64_MAX = 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38

texts = st.one_of(
    st.sampled_from(["email", "email\u0000", "\u0000", "", "x" * 3000, "\ufffd", "한국어\u0000"]),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
)
huge_or_tiny = st.one_of(
    st.sampled_from([0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1.7e308, -1.7e308]),
    st.floats(allow_nan=False, allow_infinity=False),
)
timestamps = st.one_of(
    st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", at(10)]),
    st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=st.just(UTC)).map(lambda d: d.isoformat()),
)
vectors = st.one_of(
    st.just([]),
    st.just([FLOAT32_MAX] * DIM),
    st.just([-FLOAT32_MAX] + [1e-45] * (DIM - 1)),
    st.lists(st.floats(-FLOAT32_MAX, FLOAT32_MAX, width=32), min_size=DIM, max_size=DIM),
)
sessions = st.fixed_dictionaries(
    {
        "category": texts,
        "user": texts.filter(bool),
        "created_at": timestamps,
        "embedding": vectors,
        "score": huge_or_tiny,
        "latency": st.one_of(st.sampled_from([0, INT64_MAX, 1.7976931348623157e308]), st.floats(0, allow_infinity=False)),
        "index": st.sampled_from([0, 1, INT64_MAX]),
        "accepted": st.booleans(),
        "prompt": texts,
    }
)


def store(logs: Logs, n: int, s: dict) -> None:
    sid = f"p{n}"
    user = s["user"]
    if s["embedding"]:
        logs.e(10, sid, embedding=s["embedding"])
    else:
        logs.e(10, sid, embedding=[0.5] * DIM)
        logs.db.context_block.update_one({"_id": f"h-{sid}"}, {"$set": {"embedding_v1": []}})  # an empty one
    logs.a(10, sid, user_id=user, reco_category_input=s["category"], created_at=s["created_at"], P_vec={"email": s["score"]})
    logs.b(10, sid, user_id=user, target_category=s["category"], created_at=s["created_at"])
    logs.c(10, sid, user_id=user, was_accepted=s["accepted"], selected_option_index=s["index"], created_at=s["created_at"])
    logs.d(10, sid, user_prompt=s["prompt"], selected_index=s["index"] if s["accepted"] else None)
    logs.put("I", 10, insert_id=f"i-{sid}", recommend_session_id=sid, created_at=s["created_at"], latency_ms=s["latency"])


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(drawn=st.lists(sessions, min_size=1, max_size=4))
def test_extreme_but_valid_values_go_through_every_store(chain, redis, drawn):  # noqa: F811
    s = dataclasses.replace(chain, mongo_db=f"prop_{uuid.uuid4().hex[:8]}", qdrant_collection=f"p_{uuid.uuid4().hex[:8]}")
    client = MongoClient(s.mongo_uri, tz_aware=True)
    db = client[s.mongo_db]
    redis.flushdb()
    pg = psycopg2.connect(s.analytics_db_uri)  # each example starts from an empty analytics database
    with pg, pg.cursor() as cur:
        cur.execute("drop schema if exists sentencify cascade")
    pg.close()
    try:
        logs = Logs(db)
        for n, session in enumerate(drawn):
            store(logs, n, session)
        for step in STEPS:
            run_step(step, hour(10), s)
        assert list(db[quarantine.QUARANTINE].find()) == []
        views = store_checks.postgres_views(s)
        profiles = store_checks.redis_profiles(redis)
        points = store_checks.qdrant_points(s)
        assert store_checks.postgres_rows(s, "select count(*) from sentencify.fact_examples") == [(len(drawn),)]
        assert views["v_kpis"][0][0] == len(drawn)  # every recommendation counted once
        assert sum(r[1] for r in views["v_latency_hourly"]) == len(drawn)
        assert len(profiles) == db.user_profile.count_documents({}) == len({d["user"] for d in drawn})
        high = db.training_examples.count_documents({"consistency_flag": "high", "context_embedding.0": {"$exists": True}})
        assert len(points) == high
    finally:
        client.drop_database(s.mongo_db)
        client.close()

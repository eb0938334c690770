"""Property (hypothesis): whatever interleaving of windowed runs, full runs, store losses and raw
deletions happened, one more run of the chain leaves every derived store exactly as one full
rebuild from the remaining raw records would (pipeline.md, "Derived stores agree with MongoDB":
"at the latest after the next successful run of its step, whatever happened to the store").

The reference is built from a copy of the remaining raw collections in a database, Redis db,
Qdrant path and PostgreSQL database of its own, by `rebuild`; both sides are then read whole and
compared, the times of computation aside.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime

import psycopg2
import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pymongo import MongoClient

from sentencify import vectorstore
from sentencify.schemas import EVENT_TYPES
from sentencify.stack.services import postgres_service
from sentencify.steps.runner import STEPS, run_step
from tests.chain_data import Logs, at

USERS = ("ann", "bob")
FACTS = ("fact_traffic", "fact_categories", "fact_latency", "fact_dead_letters", "fact_examples", "fact_sessions", "fact_users")

ingest = st.tuples(st.just("ingest"), st.integers(1, 3), st.booleans())
chain = st.just(("chain",))
full = st.tuples(st.just("full"), st.sampled_from(STEPS))
lose = st.tuples(st.just("lose"), st.sampled_from(["redis", "qdrant", "fact_examples", "fact_traffic", "example"]))
delete_raw = st.tuples(st.just("delete_raw"), st.integers(0, 10), st.sampled_from(["session", "a_only"]))
ACTIONS = st.lists(st.one_of(ingest, chain, full, lose, delete_raw), min_size=2, max_size=7)


@pytest.fixture
def world(stack_settings, settings, tmp_path_factory):
    """Two deployments on the test stack: the one the actions act on, and the reference."""
    pg = postgres_service(stack_settings)
    pg.provision()
    made = []

    def deployment(redis_db: int) -> object:
        name = f"analytics_{uuid.uuid4().hex[:8]}"
        pg.create_database(name)
        made.append(name)
        return dataclasses.replace(
            settings,
            mongo_db=f"conv_{uuid.uuid4().hex[:8]}",
            qdrant_path=str(tmp_path_factory.mktemp("qdrant")),
            analytics_db_uri=f"postgresql://sentencify@127.0.0.1:{stack_settings.postgres_port}/{name}",
            redis_url=stack_settings.redis_url.rsplit("/", 1)[0] + f"/{redis_db}",
            vector_real_threshold=2,
        )

    yield deployment
    for name in made:
        pg.psql(f"drop database {name} with (force)")


def _state(s) -> dict:
    """Every derived store read whole, times of computation left out."""
    client = MongoClient(s.mongo_uri, tz_aware=True)
    db = client[s.mongo_db]
    out: dict = {
        "examples": {d["_id"]: {k: v for k, v in d.items() if k != "processed_at"} for d in db.training_examples.find()},
        "rejects": {d["_id"]: {k: v for k, v in d.items() if k != "detected_at"} for d in db.etl_rejects.find()},
        "profiles": {d["_id"]: {k: v for k, v in d.items() if k != "updated_at"} for d in db.user_profile.find()},
    }
    client.close()
    r = redis_lib.Redis.from_url(s.redis_url)
    out["redis"] = {
        k.decode(): {f: v for f, v in json.loads(r.get(k)).items() if f != "updated_at"}
        for k in r.scan_iter(match="user_profile:*")
    }
    r.close()
    qc = vectorstore.client(s)
    try:
        points, _ = (
            qc.scroll(s.qdrant_collection, limit=10_000, with_vectors=True)
            if qc.collection_exists(s.qdrant_collection)
            else ([], None)
        )
        out["points"] = {str(p.id): (p.payload, [round(x, 5) for x in p.vector]) for p in points if p.payload["source"] == "real"}
    finally:
        qc.close()
    with psycopg2.connect(s.analytics_db_uri) as conn, conn.cursor() as cur:
        for table in FACTS:
            cur.execute(f"select * from sentencify.{table}")
            out[table] = sorted(map(repr, cur.fetchall()))
    conn.close()
    return out


def _act(s, db, logs: Logs, action: tuple, clock: dict) -> None:
    """One action. Records are ingested now (as a consumer stamps them) and the chain runs with no
    window (everything not yet processed), so any order of runs reads every record."""
    kind = action[0]
    if kind == "ingest":
        h = clock["hour"] = clock["hour"] + 1
        for i in range(action[1]):
            sid, user = f"s{h}-{i}", USERS[(h + i) % len(USERS)]
            late = {"created_at": at(h, 0, 8)} if action[2] and i == 0 else {}  # a time gap: low
            now = {"ingested": datetime.now(UTC)}
            logs.full_session(
                h,
                sid,
                e=now,
                a={"user_id": user, **now},
                b={"user_id": user, **late, **now},
                c={"user_id": user, **now},
                d={"user": user, **now},
            )
    elif kind == "chain":
        for step in STEPS:
            run_step(step, None, s)
    elif kind == "full":
        run_step(action[1], None, s, full=True)
    elif kind == "lose":
        what = action[1]
        if what == "redis":
            redis_lib.Redis.from_url(s.redis_url).flushdb()
        elif what == "qdrant":
            qc = vectorstore.client(s)
            try:
                if qc.collection_exists(s.qdrant_collection):
                    qc.delete_collection(s.qdrant_collection)
            finally:
                qc.close()
        elif what == "example":
            db.training_examples.delete_one({})
        else:
            with psycopg2.connect(s.analytics_db_uri) as conn, conn.cursor() as cur:
                cur.execute("select to_regclass(%s) is not null", (f"sentencify.{what}",))
                if cur.fetchone()[0]:
                    cur.execute(f"truncate sentencify.{what}")
            conn.close()
    elif kind == "delete_raw":
        sessions = sorted(db.editor_recommend_options.distinct("recommend_session_id"))
        if sessions:
            sid = sessions[action[1] % len(sessions)]
            collections = (
                ("editor_recommend_options",)
                if action[2] == "a_only"
                else (
                    "editor_recommend_options",
                    "editor_run_paraphrasing",
                    "editor_selected_paraphrasing",
                )
            )
            for collection in collections:
                db[collection].delete_many({"recommend_session_id": sid})


@hsettings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(actions=ACTIONS)
def test_any_interleaving_converges_to_one_full_rebuild_of_the_remaining_raw_records(world, actions):
    s, ref = world(1), world(2)
    for target in (s, ref):
        redis_lib.Redis.from_url(target.redis_url).flushdb()
    client = MongoClient(s.mongo_uri, tz_aware=True)
    try:
        db = client[s.mongo_db]
        logs, clock = Logs(db), {"hour": 5}
        _act(s, db, logs, ("ingest", 2, True), clock)
        for action in actions:
            _act(s, db, logs, action, clock)
        for step in STEPS:  # the next successful run of each step
            run_step(step, None, s)
        for et in EVENT_TYPES:  # the reference: the remaining raw records, rebuilt in full
            docs = list(db[et.name].find())
            if docs:
                client[ref.mongo_db][et.name].insert_many(docs)
        for step in STEPS:
            run_step(step, None, ref, full=True)
        got, want = _state(s), _state(ref)
        for key in want:
            assert got[key] == want[key], (key, actions)
    finally:
        client.drop_database(s.mongo_db)
        client.drop_database(ref.mongo_db)
        client.close()

"""A run that lost its lease publishes nothing more, in any store (pipeline.md "Windows and late data").

Fault injection by signals and settings: a `run_step` subprocess (LEASE_TTL_S=5) stops itself with
SIGSTOP right after it has read (before its first write), stays stopped past its lease while newer
data arrives and another run publishes it, then gets SIGCONT. Also: a host whose clock runs ahead
cannot take a live lease, and each store's guard refuses an older token on its own.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from pymongo import InsertOne, MongoClient

from sentencify import vectorstore
from sentencify.stack.process import free_port
from sentencify.steps import lease as lease_module
from sentencify.steps import progress
from sentencify.steps.etl import EXAMPLES
from sentencify.steps.fence import FencedPostgres, FencedQdrant, LeaseLost
from sentencify.steps.lease import LEASES, LeaseTimeout, StepLease
from sentencify.steps.profiles import REDIS_KEY
from sentencify.steps.publish import publish
from sentencify.steps.runner import STEPS, run_step
from tests.chain_data import Logs, at, hour
from tests.helpers import ROOT, wait_for
from tests.integration.test_timing import chain, point_payload  # noqa: F401 (fixture)
from tests.integration.test_views import analytics, rows  # noqa: F401 (fixture)

TTL_S = 5.0  # the frozen run's; the other runs keep the default, so a loaded machine cannot expire them

# The stale run X: stops itself (SIGSTOP) once it has read, before the step's first write.
_FROZEN_RUN = """
import os, signal, sys
from sentencify.settings import Settings
from sentencify.steps import etl, profiles, vectors, views
from sentencify.steps.runner import run_step
from tests.chain_data import hour

step = sys.argv[1]
stopped = []

def stop_once():
    if not stopped:
        stopped.append(1)
        os.kill(os.getpid(), signal.SIGSTOP)

def stop_before(fn):
    def wrapper(*args, **kwargs):
        stop_once()
        return fn(*args, **kwargs)
    return wrapper

def stop_after_reading(fn):
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        out = list(out) if not isinstance(out, dict) else out
        stop_once()
        return out
    return wrapper

if step == "etl":
    etl.publish = stop_before(etl.publish)  # every read done, nothing published yet
elif step == "profile":
    profiles.publish = stop_before(profiles.publish)
elif step == "vectors":
    vectors.find_in = stop_after_reading(vectors.find_in)  # the examples read, no point written
elif step == "views":
    views.entity_facts = stop_after_reading(views.entity_facts)  # the sessions' facts read, not exported
try:
    run_step(step, hour(10), Settings.from_env())
except Exception as exc:
    print(f"FAILED {type(exc).__name__}: {exc}", flush=True)
    sys.exit(1)
print("PUBLISHED", flush=True)
"""


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "T"


def _session_without_c(mongo) -> Logs:
    logs = Logs(mongo)
    logs.e(10, "s1"), logs.a(10, "s1"), logs.b(10, "s1")
    return logs


def _accepted_everywhere(s, mongo, redis) -> dict:
    conn = psycopg2.connect(s.analytics_db_uri)
    try:
        pg = rows(conn, "select accepted from sentencify.fact_sessions where session_id = 's1'")
    finally:
        conn.close()
    raw = redis.get(REDIS_KEY.format(user_id="u1"))
    return {
        "mongo": mongo[EXAMPLES].find_one({"_id": "s1"})["was_accepted"],
        "profile": mongo.user_profile.find_one({"_id": "u1"})["recommend_accept_rate"],
        "redis": raw is not None and b'"recommend_accept_rate":1.0' in raw,
        "qdrant": (point_payload(s, "s1") or {}).get("was_accepted"),
        "postgres": pg,
    }


@pytest.mark.parametrize("step", STEPS)
def test_a_run_frozen_past_its_lease_publishes_nothing_after_a_newer_run(chain, mongo, redis, step, tmp_path):  # noqa: F811
    s = chain
    logs = _session_without_c(mongo)
    for each in STEPS:  # every store holds s1, not accepted
        run_step(each, hour(10), s)
    assert _accepted_everywhere(s, mongo, redis)["mongo"] is False
    # A later paraphrase run: X's read now differs from what is published, so X has something to write.
    logs.b(10, "s1", insert_id="b2-s1", created_at=at(10, 0, 3), target_category="report")

    out = tmp_path / "x.log"
    env = {**os.environ, **dataclasses.replace(s, lease_ttl_s=TTL_S).to_env(), "PYTHONPATH": str(ROOT)}
    with open(out, "wb") as log:
        x = subprocess.Popen([sys.executable, "-c", _FROZEN_RUN, step], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        wait_for(lambda: _stopped(x.pid), 60, f"run X of {step} to stop itself after reading")
        x_token = mongo[LEASES].find_one({"_id": step})["token"]
        logs.c(10, "s1", was_accepted=True), logs.d(10, "s1")  # newer data arrives meanwhile
        time.sleep(TTL_S + 0.5)  # X's lease expires (by MongoDB's clock)

        errors: list[BaseException] = []

        def run_y() -> None:
            try:
                for each in STEPS:
                    run_step(each, hour(10), s)
            except BaseException as exc:  # noqa: BLE001 (asserted below)
                errors.append(exc)

        y = threading.Thread(target=run_y)
        y.start()
        # Y publishes (local-mode Qdrant: Y's vectors step waits for the file lock the frozen X holds,
        # so X is resumed once Y holds the vectors lease).
        wait_for(
            lambda: not y.is_alive() or (step == "vectors" and mongo[LEASES].find_one({"_id": step})["token"] > x_token),
            120,
            "run Y to publish",
        )
    finally:
        os.kill(x.pid, signal.SIGCONT)
    x_exit = x.wait(60)
    y.join(120)
    assert not errors, errors
    assert _accepted_everywhere(s, mongo, redis) == {
        "mongo": True,
        "profile": 1.0,
        "redis": True,
        "qdrant": True,
        "postgres": [(True,)],
    }
    assert x_exit == 1 and "LeaseLost" in out.read_text() and "PUBLISHED" not in out.read_text(), out.read_text()
    assert progress.safe_until(mongo, step) == hour(10).end


def test_a_host_whose_clock_runs_ahead_cannot_take_a_live_lease(mongo, monkeypatch):
    """The holder renews; a host 2 minutes ahead asks for the lease for 3 TTLs and is refused."""
    holder = StepLease(mongo, "etl", ttl_s=1.0)
    with holder:
        real = datetime

        class Ahead(datetime):
            @classmethod
            def now(cls, tz=None):
                return real.now(tz) + timedelta(minutes=2)

        class AheadTime:
            def __getattr__(self, name):
                return getattr(time, name)

            @staticmethod
            def time():
                return time.time() + 120

        monkeypatch.setattr(lease_module, "datetime", Ahead)  # the host-side code path, 2 minutes ahead
        monkeypatch.setattr(lease_module, "time", AheadTime())
        with pytest.raises(LeaseTimeout), StepLease(mongo, "etl", ttl_s=1.0, wait_s=3.0, poll_s=0.1):
            pass
        holder.check()  # still held
        token = holder.fence.token
    taker = StepLease(mongo, "etl", ttl_s=1.0, wait_s=3.0)
    with taker:  # released: taken at once, with a larger token
        assert taker.fence.token > token


def _lost_and_taken(mongo, step: str = "views") -> tuple[StepLease, StepLease]:
    """X held the lease and stalled past it; Y took it over."""
    x = StepLease(mongo, step, ttl_s=1.0)
    x.__enter__()
    x._done.set()  # X's renewer stops, as in a frozen process
    time.sleep(1.3)
    y = StepLease(mongo, step, ttl_s=30.0, wait_s=5.0)
    y.__enter__()
    assert y.fence.token > x.fence.token
    return x, y


def test_each_store_refuses_an_older_token(chain, mongo, redis):  # noqa: F811
    s = chain
    x, y = _lost_and_taken(mongo)
    try:
        with pytest.raises(LeaseLost):
            x.check()
        # MongoDB: the transaction's guard on the lease document
        with pytest.raises(LeaseLost):
            publish(mongo, {"training_examples": [_insert({"_id": "stale"})]}, x.fence)
        assert mongo.training_examples.count_documents({}) == 0
        publish(mongo, {"training_examples": [_insert({"_id": "new"})]}, y.fence)
        assert mongo.training_examples.count_documents({}) == 1
        # Redis: the compare-and-set script, after Y claimed the step's fence there
        y.fence.claim_redis(redis)
        with pytest.raises(LeaseLost):
            x.fence.redis_set(redis, {"k": "stale"}, check=False)  # even without the lease check first
        assert redis.get("k") is None
        y.fence.redis_set(redis, {"k": "new"})
        assert redis.get("k") == b"new"
        # PostgreSQL: the transaction ends with the token raise and the lease check
        raw = psycopg2.connect(s.analytics_db_uri)
        try:
            y.fence.claim_postgres(raw)
            with raw, raw.cursor() as cur:
                cur.execute("create table t (v text)")
            stale = FencedPostgres(raw, x.fence)
            with pytest.raises(LeaseLost), stale, raw.cursor() as cur:
                cur.execute("insert into t values ('stale')")
            with FencedPostgres(raw, y.fence), raw.cursor() as cur:
                cur.execute("insert into t values ('new')")
            assert rows(raw, "select v from t") == [("new",)]
        finally:
            raw.close()
        # Qdrant: the lease checked before each write
        qc = vectorstore.client(s)
        try:
            vectorstore.ensure_collection(qc, s.qdrant_collection, s.embedding_dim)
            with pytest.raises(LeaseLost):
                FencedQdrant(qc, x.fence).delete(s.qdrant_collection, points_selector=[vectorstore.point_id("s1")])
            FencedQdrant(qc, y.fence).delete(s.qdrant_collection, points_selector=[vectorstore.point_id("s1")])
        finally:
            qc.close()
    finally:
        y.__exit__(None, None, None)


def test_a_renewal_that_keeps_failing_stops_the_run_from_publishing(mongo, settings):
    """MongoDB unreachable for the renewer: after one TTL the fence refuses every write on its own."""
    held = StepLease(mongo, "etl", ttl_s=1.0)
    with held:
        held.db = MongoClient(f"mongodb://127.0.0.1:{free_port()}", serverSelectionTimeoutMS=200)[mongo.name]
        wait_for(lambda: held.fence._lost_reason is not None, 10, "the fence to be marked lost")
        with pytest.raises(LeaseLost, match="no renewal succeeded"):
            publish(mongo, {"training_examples": [_insert({"_id": "late"})]}, held.fence)
        held.db = mongo
    assert mongo.training_examples.count_documents({}) == 0


def _insert(doc: dict) -> InsertOne:
    return InsertOne(doc)


def test_lease_ttl_is_a_setting():
    from sentencify.settings import Settings, SettingsError

    assert Settings.from_env({}).lease_ttl_s == 60.0
    assert Settings.from_env({"LEASE_TTL_S": "5"}).lease_ttl_s == 5.0
    with pytest.raises(SettingsError, match="LEASE_TTL_S"):
        Settings.from_env({"LEASE_TTL_S": "0"})


def test_released_lease_keeps_its_token_and_the_next_take_over_grows_it(mongo):
    tokens = []
    for _ in range(3):
        with StepLease(mongo, "profile", ttl_s=5.0) as held:
            tokens.append(held.fence.token)
    assert tokens == sorted(set(tokens))
    doc = mongo[LEASES].find_one({"_id": "profile"})
    assert doc["holder"] is None and doc["token"] == tokens[-1]
    mongo[LEASES].delete_many({})  # even with the lease collection lost, tokens do not go back
    with StepLease(mongo, "profile", ttl_s=5.0) as held:
        assert held.fence.token > tokens[-1]


def test_without_transactions_each_bulk_write_is_preceded_by_the_lease_check(mongo, monkeypatch):
    """A standalone MongoDB (no transactions): the guard is a check right before each bulk write."""
    from sentencify.steps import publish as publish_module

    monkeypatch.setattr(publish_module, "supports_transactions", lambda db: False)
    x, y = _lost_and_taken(mongo, "etl")
    try:
        with pytest.raises(LeaseLost):
            publish(mongo, {"training_examples": [_insert({"_id": "stale"})]}, x.fence)
        publish(mongo, {"training_examples": [_insert({"_id": "new"})]}, y.fence)
        assert [d["_id"] for d in mongo.training_examples.find()] == ["new"]
    finally:
        y.__exit__(None, None, None)


def test_postgres_fence_with_psycopg3_transactions(chain, mongo):  # noqa: F811
    """Airflow's PostgresHook may hand over a psycopg 3 connection: its `transaction()` blocks are fenced too."""
    import psycopg

    x, y = _lost_and_taken(mongo)
    try:
        with psycopg.connect(chain.analytics_db_uri) as raw:
            y.fence.claim_postgres(raw)
            with raw.transaction(), raw.cursor() as cur:
                cur.execute("create table t3 (v text)")
            stale = FencedPostgres(raw, x.fence)
            with pytest.raises(LeaseLost), stale.transaction(), raw.cursor() as cur:
                cur.execute("insert into t3 values ('stale')")
            with FencedPostgres(raw, y.fence).transaction(), raw.cursor() as cur:
                cur.execute("insert into t3 values ('new')")
            with raw.cursor() as cur:
                cur.execute("select v from t3")
                assert cur.fetchall() == [("new",)]
    finally:
        y.__exit__(None, None, None)


# A run killed -9 in the middle of a publish: its transaction, with the guard's write on the lease
# document, stays open on the server until transactionLifetimeLimitSeconds (60 s) aborts it.
_KILLED_IN_PUBLISH = """
import sys, time
from pymongo import MongoClient
from sentencify.steps.lease import StepLease

db = MongoClient(sys.argv[1], tz_aware=True)[sys.argv[2]]
held = StepLease(db, "etl", ttl_s=2.0).__enter__()
session = db.client.start_session()
session.start_transaction()
held.fence.guard_mongo(session)  # the publish's first write: the lease document, locked to the commit
db.training_examples.insert_one({"_id": "never-committed"}, session=session)
print("IN TRANSACTION", flush=True)
time.sleep(600)
"""


def test_a_run_killed_inside_its_publish_transaction_is_taken_over_after_the_transaction_lifetime(settings, mongo):
    """The next run takes the lease once the TTL and the dead run's transaction (60 s) are past, and
    does not wait for ever on the lock that transaction holds (the local server reaps an idle
    transaction only when a transaction command arrives: a plain update waited for good)."""
    x = subprocess.Popen(
        [sys.executable, "-c", _KILLED_IN_PUBLISH, settings.mongo_uri, settings.mongo_db],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
    )
    try:
        assert x.stdout is not None and x.stdout.readline() == b"IN TRANSACTION\n"
    finally:
        x.kill()
        x.wait(10)
    killed_token = mongo[LEASES].find_one({"_id": "etl"})["token"]
    taken: list[StepLease] = []
    began = time.monotonic()
    y = threading.Thread(target=lambda: taken.append(StepLease(mongo, "etl", ttl_s=5.0, wait_s=150).__enter__()), daemon=True)
    y.start()
    y.join(120)
    assert taken, "the next run still waits on the killed run's lease after 120 s"
    try:
        assert taken[0].fence.token > killed_token
        assert time.monotonic() - began < 100
        assert mongo.training_examples.count_documents({}) == 0  # the killed run published nothing
    finally:
        taken[0].__exit__(None, None, None)


def test_a_qdrant_write_that_lands_after_a_take_over_is_reconciled_by_the_next_run(chain, mongo, redis):  # noqa: F811
    """Qdrant has no conditional write: X passes its check, freezes, Y takes over and publishes the
    newer point, X's older batch lands. X finds its lease lost right after the batch and asks for a
    reconcile; the next vectors run - of another hour, which does not touch the session - repairs it."""
    s = chain
    logs = _session_without_c(mongo)
    for each in STEPS:
        run_step(each, hour(10), s)
    qc = vectorstore.client(s)
    try:
        stale = qc.retrieve(s.qdrant_collection, [vectorstore.point_id("s1")], with_payload=True, with_vectors=True)[0]
    finally:
        qc.close()
    assert stale.payload["was_accepted"] is False
    logs.c(10, "s1", was_accepted=True), logs.d(10, "s1")
    run_step("etl", hour(10), s)
    run_step("vectors", hour(10), s)  # Y: the newer point
    assert point_payload(s, "s1")["was_accepted"] is True

    x = StepLease(mongo, "vectors", ttl_s=1.0)
    x.__enter__()

    class FreezesInsideTheBatch:
        """X's Qdrant client: X freezes between its check and its batch; Y takes the lease over meanwhile."""

        def __init__(self, client) -> None:
            self.client = client

        def upsert(self, *args, **kwargs):
            x._done.set()  # X's renewer stops, as in a frozen process
            time.sleep(1.3)
            StepLease(mongo, "vectors", ttl_s=30.0, wait_s=5.0).__enter__().__exit__(None, None, None)
            return self.client.upsert(*args, **kwargs)

    qc = vectorstore.client(s)
    try:
        with pytest.raises(LeaseLost):
            FencedQdrant(FreezesInsideTheBatch(qc), x.fence).upsert(s.qdrant_collection, points=[stale], wait=True)
    finally:
        qc.close()
    assert point_payload(s, "s1")["was_accepted"] is False  # stale, as a write after a take-over leaves it
    assert mongo[LEASES].find_one({"_id": "vectors"})["reconcile_requests"] == 1

    run_step("vectors", hour(11), s)  # an hour that does not touch s1
    assert point_payload(s, "s1")["was_accepted"] is True
    assert mongo[LEASES].find_one({"_id": "vectors"})["reconciled"] == 1
    run_step("vectors", hour(12), s)  # answered: the next run is an ordinary one
    assert mongo.pipeline_runs.find_one({"_id": f"vectors:{hour(12).start.isoformat()}"})["summary"]["full"] is False

"""Derived stores agree with MongoDB (pipeline.md): each loss a store can suffer is recognised by the
next run of its step, which re-materialises the store from MongoDB; raw records removed take their
examples, points, rows and profiles with them; `sentencify verify` proves agreement and repairs.

Every test ends with the stores equal to what MongoDB implies, checked twice: by `verify` (exit 0)
and by reading each store against the examples and profiles directly.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import psycopg2
import pytest
import redis as redis_lib

from sentencify import vectorstore
from sentencify.cli import main
from sentencify.stack.services import postgres_service
from sentencify.steps.runner import STEPS, run_step
from sentencify.verify import verify
from tests.chain_data import Logs, hour

USERS = ("ann", "bob", "cho")


@pytest.fixture
def s(settings, stack_settings, tmp_path, monkeypatch):
    """Settings with a Qdrant path and an analytics database of this test's own, in the environment too."""
    pg = postgres_service(stack_settings)
    pg.provision()
    name = f"analytics_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    out = dataclasses.replace(
        settings,
        qdrant_path=str(tmp_path / "qdrant"),
        analytics_db_uri=f"postgresql://sentencify@127.0.0.1:{stack_settings.postgres_port}/{name}",
        vector_real_threshold=3,
    )
    for key, value in out.to_env().items():
        monkeypatch.setenv(key, value)
    yield out
    pg.psql(f"drop database {name} with (force)")


@pytest.fixture
def r(s):
    client = redis_lib.Redis.from_url(s.redis_url)
    client.flushdb()  # one Redis for the test session: profiles are keyed by user alone (pipeline.md)
    yield client
    client.flushdb()
    client.close()


def sessions(logs: Logs, h: int, n: int, prefix: str) -> list[str]:
    """`n` clean sessions ingested in hour `h`, spread over USERS."""
    made = []
    for i in range(n):
        user = USERS[i % len(USERS)]
        sid = f"{prefix}{i}"
        logs.full_session(h, sid, a={"user_id": user}, b={"user_id": user}, c={"user_id": user}, d={"user": user})
        made.append(sid)
    return made


def chain(s, h: int) -> dict[str, dict]:
    return {step: run_step(step, hour(h), s) for step in STEPS}


def seed(s) -> None:
    assert main(["seed-synthetic", "--per-category", "2"]) == 0


def assert_agree(s, mongo, r) -> None:
    """`verify` agrees, and each store read directly equals MongoDB's examples and profiles."""
    results = verify(s)
    assert all(c.agrees for c in results), [d.line() for c in results for d in c.final if not d.agrees]
    high = {d["_id"] for d in mongo.training_examples.find({"consistency_flag": "high"})}
    qc = vectorstore.client(s)
    try:
        points, _ = qc.scroll(s.qdrant_collection, scroll_filter=vectorstore.source_filter("real"), limit=10_000)
    finally:
        qc.close()
    assert {p.payload["example_id"] for p in points} == high
    profiles = {d["_id"]: d for d in mongo.user_profile.find()}
    cached = {k.decode().split(":", 1)[1]: json.loads(r.get(k)) for k in r.scan_iter(match="user_profile:*")}
    assert set(cached) == set(profiles)
    for user, doc in profiles.items():
        assert cached[user]["paraphrase_execution_count"] == doc["paraphrase_execution_count"]
    with psycopg2.connect(s.analytics_db_uri) as conn, conn.cursor() as cur:
        cur.execute("select example_id from sentencify.fact_examples")
        assert {x for (x,) in cur.fetchall()} == {d["_id"] for d in mongo.training_examples.find({}, {"_id": 1})}
        cur.execute("select user_id from sentencify.fact_users")
        assert {x for (x,) in cur.fetchall()} == set(profiles)


def test_a_flushed_redis_is_refilled_whole_by_the_next_profile_run_and_said_so(s, mongo, r):
    logs = Logs(mongo)
    sessions(logs, 10, 6, "s")
    chain(s, 10)
    assert len(list(r.scan_iter(match="user_profile:*"))) == 3
    r.flushdb()  # as a Redis restarted without persistence

    assert main(["verify", "--step", "profile"]) == 1  # the check sees it before any run
    logs.full_session(11, "late", a={"user_id": "ann"}, b={"user_id": "ann"}, c={"user_id": "ann"})
    summaries = chain(s, 11)  # a new hour touches one user only
    assert any("redis_marker" in why for why in summaries["profile"]["rematerialised"]), summaries["profile"]
    assert summaries["profile"]["drift"]["redis_profiles"]["missing"] == 3
    assert_agree(s, mongo, r)


def test_raw_records_removed_then_rebuild_removes_every_derived_copy(s, mongo, r, capsys):
    logs = Logs(mongo)
    sessions(logs, 10, 9, "s")
    logs.full_session(10, "z0", a={"user_id": "zed"}, b={"user_id": "zed"}, c={"user_id": "zed"}, d={"user": "zed"})
    chain(s, 10)
    assert mongo.user_profile.count_documents({"_id": "zed"}) == 1
    for collection in ("editor_recommend_options", "editor_run_paraphrasing", "editor_selected_paraphrasing"):
        mongo[collection].delete_many({"user_id": "zed"})

    assert main(["verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    extra = {e["store"]: e["extra"] for e in report["stores"]}
    # Each store against its own input: the examples and profiles against the raw records (the
    # points agree with the examples as they stand; the rebuild's cascade reaches them).
    assert extra["training_examples"] == 1 and extra["user_profile"] == 1, report
    assert main(["rebuild", "--from", "etl"]) == 0
    assert mongo.training_examples.count_documents({"_id": "z0"}) == 0
    assert mongo.user_profile.count_documents({"_id": "zed"}) == 0 and r.get("user_profile:zed") is None
    assert_agree(s, mongo, r)


def test_raw_records_removed_are_noticed_by_the_next_hourly_run(s, mongo, r):
    logs = Logs(mongo)
    sessions(logs, 10, 6, "s")
    chain(s, 10)
    mongo.editor_recommend_options.delete_one({"recommend_session_id": "s0"})
    mongo.editor_run_paraphrasing.delete_many({"recommend_session_id": "s0"})
    mongo.editor_selected_paraphrasing.delete_many({"recommend_session_id": "s0"})
    logs.full_session(11, "t0", a={"user_id": "bob"}, b={"user_id": "bob"}, c={"user_id": "bob"})
    summaries = chain(s, 11)
    assert any("raw records removed" in why for why in summaries["etl"]["rematerialised"]), summaries["etl"]
    assert mongo.training_examples.count_documents({"_id": "s0"}) == 0
    assert_agree(s, mongo, r)


def test_a_dropped_qdrant_collection_is_rebuilt_with_its_synthetic_points(s, mongo, r):
    logs = Logs(mongo)
    seed(s)
    sessions(logs, 10, 6, "s")  # 6 high "email" examples: email retires its synthetic points at 3
    chain(s, 10)
    qc = vectorstore.client(s)
    try:
        assert vectorstore.count(qc, s.qdrant_collection, "synthetic", "email") == 0
        assert vectorstore.count(qc, s.qdrant_collection, "synthetic", "report") == 2
        qc.delete_collection(s.qdrant_collection)  # as another client, or a container without a volume
    finally:
        qc.close()
    sessions(logs, 11, 2, "n")
    summaries = chain(s, 11)
    assert summaries["vectors"]["rematerialised"], summaries["vectors"]
    assert sum(summaries["vectors"]["real_points"].values()) == 8
    assert summaries["vectors"]["synthetic_points"]["report"] == 2 and summaries["vectors"]["synthetic_points"]["email"] == 0
    assert_agree(s, mongo, r)


def test_a_category_below_the_threshold_gets_its_synthetic_points_back(s, mongo, r):
    logs = Logs(mongo)
    seed(s)
    sessions(logs, 10, 3, "s")  # email reaches 3: retired
    chain(s, 10)
    mongo.editor_recommend_options.delete_one({"recommend_session_id": "s0"})  # now 2 real email points
    assert main(["rebuild", "--from", "etl"]) == 0
    qc = vectorstore.client(s)
    try:
        assert vectorstore.count(qc, s.qdrant_collection, "real", "email") == 2
        assert vectorstore.count(qc, s.qdrant_collection, "synthetic", "email") == 2
    finally:
        qc.close()
    assert_agree(s, mongo, r)


def test_a_truncated_fact_table_is_re_exported_by_the_next_views_run(s, mongo, r):
    logs = Logs(mongo)
    sessions(logs, 10, 4, "s")
    chain(s, 10)
    with psycopg2.connect(s.analytics_db_uri) as conn, conn.cursor() as cur:
        cur.execute("truncate sentencify.fact_examples, sentencify.fact_traffic")
    assert main(["verify", "--step", "views"]) == 1
    summary = run_step("views", hour(12), s)  # an hour with no data at all
    assert summary["rematerialised"], summary
    assert_agree(s, mongo, r)


def test_qdrant_dropped_in_the_middle_of_a_rebuild_from_vectors(s, mongo, r, monkeypatch):
    from sentencify.steps import vectors

    logs = Logs(mongo)
    sessions(logs, 10, 30, "s")
    chain(s, 10)
    real_upsert = vectors.upsert
    dropped = []

    def upsert_then_drop(qc, collection, points, quarantined, *args):
        written = real_upsert(qc, collection, points, quarantined, *args)
        if not dropped:
            dropped.append(True)
            qc.delete_collection(collection)
        return written

    monkeypatch.setattr(vectors, "PAGE", 10)
    monkeypatch.setattr(vectors, "upsert", upsert_then_drop)
    mongo.training_examples.update_many({}, {"$set": {"processed_at": None}})  # every point to rewrite
    summary = run_step("vectors", None, s, full=True)
    assert dropped and summary["rematerialised"], summary
    monkeypatch.undo()
    assert_agree(s, mongo, r)


def test_redis_evicting_profiles_under_maxmemory_is_noticed_and_refilled(s, mongo, r):
    logs = Logs(mongo)
    sessions(logs, 10, 6, "s")
    chain(s, 10)
    used = int(r.info("memory")["used_memory"])
    try:
        r.config_set("maxmemory-policy", "allkeys-lru")
        r.config_set("maxmemory", str(used + 200_000))
        for i in range(2_000):  # another tenant's cache fills the instance: profiles are evicted
            r.set(f"cache:{i}", "x" * 1000)
    finally:
        r.config_set("maxmemory", "0")
        r.config_set("maxmemory-policy", "noeviction")
    for i in range(2_000):
        r.delete(f"cache:{i}")
    summary = run_step("profile", hour(11), s)
    assert any("evicted" in why for why in summary["rematerialised"]), summary
    assert_agree(s, mongo, r)


def test_redis_out_of_memory_fails_the_profile_run_with_one_line_naming_the_setting(s, mongo, r, capsys):
    logs = Logs(mongo)
    sessions(logs, 10, 3, "s")
    run_step("etl", hour(10), s)
    used = int(r.info("memory")["used_memory"])
    try:
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", str(used))
        assert main(["run", "profile", "--start", "2026-11-01T10:00:00Z", "--end", "2026-11-01T11:00:00Z"]) == 2
    finally:
        r.config_set("maxmemory", "0")
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "maxmemory" in err[0] and "REDIS_URL" in err[0], err
    assert main(["run", "vectors", "--start", "2026-11-01T10:00:00Z", "--end", "2026-11-01T11:00:00Z"]) == 0


def test_a_paused_vectors_dag_does_the_full_rebuild_it_missed(s, mongo, r):
    logs = Logs(mongo)
    sessions(logs, 10, 4, "s")
    logs.full_session(10, "gap", b={"created_at": "2026-11-01T10:00:08Z"})  # low at 5 s, high at 10 s
    chain(s, 10)
    s10 = dataclasses.replace(s, etl_time_gap_s=10.0)
    run_step("etl", None, s10, full=True)  # the rebuild passes; vectors' DAG is paused
    assert mongo.training_examples.find_one({"_id": "gap"})["consistency_flag"] == "high"
    summary = run_step("vectors", hour(11), s10)  # unpaused: a plain hourly run
    assert summary["full"] is True, summary
    qc = vectorstore.client(s)
    try:
        assert qc.retrieve(s.qdrant_collection, [vectorstore.point_id("gap")])
    finally:
        qc.close()
    run_step("profile", hour(11), s10)
    run_step("views", hour(11), s10)
    assert all(c.agrees for c in verify(s10))


def test_verify_repair_makes_every_store_agree_after_every_loss_at_once(s, mongo, r, capsys):
    logs = Logs(mongo)
    seed(s)
    sessions(logs, 10, 6, "s")
    chain(s, 10)
    r.flushdb()
    qc = vectorstore.client(s)
    try:
        qc.delete_collection(s.qdrant_collection)
    finally:
        qc.close()
    with psycopg2.connect(s.analytics_db_uri) as conn, conn.cursor() as cur:
        cur.execute("delete from sentencify.fact_sessions")
    mongo.training_examples.delete_one({"_id": "s1"})
    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "training_examples: 1 missing" in out and "redis_profiles: 3 missing" in out, out
    assert main(["verify", "--repair"]) == 0
    assert main(["verify"]) == 0
    assert_agree(s, mongo, r)
    with psycopg2.connect(s.analytics_db_uri) as conn, conn.cursor() as cur:
        run_step("views", hour(11), s)
        cur.execute("select store, status from sentencify.v_store_agreement")
        status = dict(cur.fetchall())
    assert status["redis_profiles"] == "agrees" and status["training_examples"] == "agrees", status

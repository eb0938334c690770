"""Every store after MongoDB keeps every value MongoDB holds readable, or quarantines its session.

One test per kind of value (pipeline.md, opening; issue 18), each bad value alone among good
sessions, through the real runner against the real MongoDB-protocol server, Redis, PostgreSQL and
Qdrant (local mode); then strict readers of every store (tests/store_checks.py).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from sentencify.steps import quarantine
from sentencify.steps.runner import STEPS, run_step
from sentencify.window import Window
from tests import store_checks
from tests.chain_data import Logs, at, hour
from tests.integration.test_views import analytics  # noqa: F401 (fixture)

DIM = 384


@pytest.fixture
def chain(settings, analytics, tmp_path, redis):  # noqa: F811
    """This test's MongoDB database, a fresh analytics database, a local Qdrant, the stack's Redis."""
    db_name = analytics[0].get_dsn_parameters()["dbname"]
    redis.flushdb()
    return dataclasses.replace(
        settings,
        qdrant_url=None,
        qdrant_path=str(tmp_path / "qdrant"),
        analytics_db_uri=f"postgresql://sentencify@127.0.0.1:{settings.postgres_port}/{db_name}",
    )


def run_chain(s, window: Window | None = None, **kw) -> dict[str, dict]:
    return {step: run_step(step, window or hour(10), s, **kw) for step in STEPS}


def good_sessions(logs: Logs, n: int = 3, h: int = 10) -> list[str]:
    sessions = [f"good{i}" for i in range(n)]
    for s in sessions:
        logs.full_session(h, s, a={"user_id": f"gu{s}"}, b={"user_id": f"gu{s}"}, c={"user_id": f"gu{s}"})
    return sessions


def read_every_store(s, mongo, redis) -> dict:
    views = store_checks.postgres_views(s)
    profiles = store_checks.redis_profiles(redis)
    points = store_checks.qdrant_points(s)
    # The counts match: every example and session exported, every profile in Redis.
    assert store_checks.postgres_rows(s, "select count(*) from sentencify.fact_examples") == [
        (mongo.training_examples.count_documents({}),)
    ]
    assert len(profiles) == mongo.user_profile.count_documents({})
    return {"views": views, "profiles": profiles, "points": points}


def quarantined(mongo) -> dict[str, str]:
    return {q["_id"]: q["reason"] for q in mongo[quarantine.QUARANTINE].find()}


def test_nul_in_text_every_step_succeeds_and_the_views_export_it(chain, mongo, redis):
    logs = Logs(mongo)
    good_sessions(logs)
    logs.full_session(10, "nul", a={"reco_category_input": "email\u0000"})  # valid, stored as sent
    logs.full_session(10, "nul\u0000id", a={"user_id": "u\u0000"}, b={"user_id": "u\u0000"}, c={"user_id": "u\u0000"})
    run_chain(chain)
    run_step("views", hour(10), chain)  # and again: every later views run succeeds too
    seen = read_every_store(chain, mongo, redis)
    categories = dict(
        store_checks.postgres_rows(
            chain, "select category, sum(recommendations)::bigint from sentencify.v_category_distribution group by 1"
        )
    )
    assert categories == {"email": 4, "email\ufffd": 1}
    assert ("nul\ufffdid",) in store_checks.postgres_rows(chain, "select example_id from sentencify.fact_examples")
    assert "user_profile:u\x00" in seen["profiles"]  # Redis keys and JSON hold NUL as it is
    assert quarantined(mongo) == {}


def test_huge_finite_embeddings_give_finite_profiles_strict_json_and_float32_vectors(chain, mongo, redis):
    logs = Logs(mongo)
    good_sessions(logs)
    for s in ("big1", "big2"):  # one user, two accepted sessions; stored as a consumer before the float32 rule would
        logs.full_session(10, s, a={"user_id": "ubig"}, b={"user_id": "ubig"}, c={"user_id": "ubig"})
        mongo.context_block.update_one({"_id": f"h-{s}"}, {"$set": {"embedding_v1": [1.7e308] * DIM}})
    run_chain(chain)
    seen = read_every_store(chain, mongo, redis)
    profile = seen["profiles"]["user_profile:ubig"]
    assert profile["user_embedding_v1"] == [1.7e308] * DIM  # the mean of finite values is finite
    assert mongo.user_profile.find_one({"_id": "ubig"})["user_embedding_v1"] == [1.7e308] * DIM
    from sentencify import vectorstore

    _, vector = seen["points"][vectorstore.point_id("big1")]
    assert vector == pytest.approx([1 / math.sqrt(DIM)] * DIM, rel=1e-6)  # the direction, as float32 holds it
    assert len(seen["points"]) == 5 and quarantined(mongo) == {}


def test_a_non_finite_embedding_quarantines_its_session_until_it_is_fixed(chain, mongo, redis):
    logs = Logs(mongo)
    good_sessions(logs)
    logs.full_session(10, "nan")
    mongo.context_block.update_one({"_id": "h-nan"}, {"$set": {"embedding_v1": [float("nan")] + [0.5] * (DIM - 1)}})
    summaries = run_chain(chain)
    assert summaries["vectors"]["quarantined"] == {"vector_not_finite": 1}
    seen = read_every_store(chain, mongo, redis)
    assert quarantined(mongo) == {"vectors:nan": "vector_not_finite"}
    assert len(seen["points"]) == 3  # the good sessions are published
    assert seen["profiles"]["user_profile:u1"]["embedding_interaction_count"] == 0  # no NaN in any mean
    assert store_checks.postgres_rows(chain, "select step, reason, sessions from sentencify.v_quarantine") == [
        ("vectors", "vector_not_finite", 1)
    ]
    entry = mongo[quarantine.QUARANTINE].find_one({"_id": "vectors:nan"})
    assert entry["attempts"] == 1 and entry["first_seen"] == entry["last_seen"] and "finite" in entry["detail"]

    # Retried by the next run that touches it, still bad: attempts counted, first_seen kept.
    logs.put("I", 11, insert_id="i-nan-2", recommend_session_id="nan", created_at=at(11), latency_ms=5)
    run_chain(chain, window=hour(11))
    entry = mongo[quarantine.QUARANTINE].find_one({"_id": "vectors:nan"})
    assert entry["attempts"] == 2 and entry["last_seen"] > entry["first_seen"]
    # Fixed (the example rebuilt from a good embedding): it leaves quarantine and gets its point.
    mongo.context_block.update_one({"_id": "h-nan"}, {"$set": {"embedding_v1": [0.5] * DIM}})
    logs.put("I", 12, insert_id="i-nan-3", recommend_session_id="nan", created_at=at(12), latency_ms=5)
    run_chain(chain, window=hour(12))
    assert quarantined(mongo) == {}
    assert len(store_checks.qdrant_points(chain)) == 4
    assert store_checks.postgres_rows(chain, "select count(*) from sentencify.v_quarantine") == [(0,)]


def test_sums_of_finite_numbers_do_not_overflow_and_64_bit_integers_pass(chain, mongo, redis):
    logs = Logs(mongo)
    good_sessions(logs)
    big = 2**63 - 1
    for n, ms in enumerate((1.7e308, 1.7e308, big)):
        logs.put("I", 10, insert_id=f"i-big{n}", recommend_session_id="good0", created_at=at(10, 1), latency_ms=ms)
    logs.full_session(10, "edge", c={"selected_option_index": big}, d={"selected_index": big})
    run_chain(chain)
    seen = read_every_store(chain, mongo, redis)
    ((requests, avg, p95),) = [r[1:4] for r in seen["views"]["v_latency_hourly"]]
    assert requests == 3 and math.isfinite(avg) and avg == pytest.approx(1.7e308 / 3 * 2 + big / 3)
    assert math.isfinite(p95)


def test_a_mean_of_tiny_latencies_does_not_underflow_the_view(chain, mongo, redis):
    """5e-324, 0 and 0 ms in one hour: their numeric mean (1.6e-324) has no float8 form, and the
    cast raised "out of range", making v_latency_hourly unreadable for every hour."""
    logs = Logs(mongo)
    good_sessions(logs)
    for n, ms in enumerate((5e-324, 0, 0)):
        logs.put("I", 10, insert_id=f"i-tiny{n}", recommend_session_id="good0", created_at=at(10, 1), latency_ms=ms)
    run_chain(chain)
    seen = read_every_store(chain, mongo, redis)
    assert [r[1:4] for r in seen["views"]["v_latency_hourly"]] == [(3, 0.0, 5e-324)]


def test_timestamps_at_the_edges_of_years_1_and_9999(chain, mongo, redis):
    logs = Logs(mongo)
    good_sessions(logs)
    logs.full_session(10, "first", a={"created_at": "0001-01-01T00:00:00Z"}, b={"created_at": "0001-01-01T00:00:01Z"})
    logs.full_session(10, "last", a={"created_at": "9999-12-31T23:59:59.999Z"}, c={"created_at": "9999-12-31T23:59:59.999Z"})
    run_chain(chain)
    seen = read_every_store(chain, mongo, redis)
    hours = {r[0] for r in seen["views"]["v_traffic_hourly"]}
    assert datetime(1, 1, 1, tzinfo=UTC) in hours and datetime(9999, 12, 31, 23, tzinfo=UTC) in hours
    assert quarantined(mongo) == {}


def test_an_example_over_16_mb_is_quarantined_and_the_rest_published(chain, mongo, redis):
    logs = Logs(mongo)
    good_sessions(logs)
    # Each record fits in 16 MB; the example that copies both would not (and PostgreSQL gets the
    # category cut to a label, stores.postgres).
    logs.full_session(10, "huge", a={"reco_category_input": "p" * (9 << 20)}, d={"user_prompt": "q" * (9 << 20)})
    summaries = run_chain(chain)
    assert summaries["etl"]["quarantined"] == {"example_not_storable": 1}
    assert quarantined(mongo) == {"etl:huge": "example_not_storable"}
    assert mongo.training_examples.count_documents({}) == 3
    read_every_store(chain, mongo, redis)
    assert store_checks.postgres_rows(chain, "select step, reason, sessions from sentencify.v_quarantine") == [
        ("etl", "example_not_storable", 1)
    ]


def test_a_stalled_views_step_shows_stale_in_v_freshness(chain, mongo, redis):
    logs = Logs(mongo)
    now = datetime.now(UTC)
    ingested = now - timedelta(minutes=20)
    logs.full_session(10, "s1", **{k: {"ingested": ingested} for k in "abcd"})
    window = Window(now - timedelta(hours=1), now)
    run_chain(chain, window=window)

    def status() -> dict[str, str]:
        return dict(store_checks.postgres_rows(chain, "select stage, status from sentencify.v_freshness"))

    assert status()["views"] == "fresh" and status()["training_examples"] == "fresh"
    # The views step stalls (every run fails) for 3 hours while the rest of the chain goes on:
    # what its last run measured is now 3 hours old, and v_freshness says so when read.
    conn = psycopg2.connect(chain.analytics_db_uri)
    with conn, conn.cursor() as cur:
        cur.execute(
            "update sentencify.freshness set measured_at = measured_at - interval '3 hours', newest = newest - interval '3 hours'"
        )
    conn.close()
    st = status()
    assert st["views"] == "stale" and set(st.values()) == {"stale"}  # nothing the dashboard shows is current
    ages = dict(store_checks.postgres_rows(chain, "select stage, age_minutes from sentencify.v_freshness"))
    assert ages["views"] >= 180


def test_views_full_re_exports_every_fact(chain, mongo, redis):
    logs = Logs(mongo)
    good_sessions(logs, h=10)
    logs.full_session(12, "later")
    run_chain(chain)  # hour 10 only
    assert store_checks.postgres_rows(chain, "select count(*) from sentencify.fact_examples") == [(3,)]
    # MongoDB changes behind the views' back (an ETL rebuild re-flags, a session is gone).
    mongo.training_examples.update_many({}, {"$set": {"consistency_flag": "low", "consistency_reasons": ["time_gap"]}})
    mongo.training_examples.delete_one({"_id": "good0"})
    run_step("views", hour(10), chain, full=True)
    examples = store_checks.postgres_rows(chain, "select example_id, consistency_flag from sentencify.fact_examples order by 1")
    assert examples == [("good1", "low"), ("good2", "low")]  # every example re-exported, the gone one deleted
    assert store_checks.postgres_rows(chain, "select total_recommendations from sentencify.v_kpis") == [(4,)]  # hour 12 too


def test_every_transaction_is_bounded(chain, mongo, redis, monkeypatch):
    from sentencify.steps import etl, profiles, publish, views
    from sentencify.stores import mongodb

    logs = Logs(mongo)
    sessions = [f"s{i}" for i in range(7)]
    for s in sessions:
        logs.full_session(10, s, a={"user_id": f"u{s}"}, b={"user_id": f"u{s}"}, c={"user_id": f"u{s}"})
    monkeypatch.setattr(mongodb, "TRANSACTION_DOCS", 2)
    monkeypatch.setattr(views, "TRANSACTION_DOCS", 2)
    sizes: list[int] = []
    real = publish.publish

    def counting(db, ops, *args, **kw):
        sizes.append(max((len(o) for c, o in ops.items() if c in (etl.EXAMPLES, profiles.PROFILES)), default=0))
        return real(db, ops, *args, **kw)

    monkeypatch.setattr(etl, "publish", counting)
    monkeypatch.setattr(profiles, "publish", counting)
    run_chain(chain)
    assert max(sizes) == 2 and len([n for n in sizes if n]) == 8  # 4 transactions of examples, 4 of profiles
    assert mongo.training_examples.count_documents({}) == 7 and mongo.user_profile.count_documents({}) == 7
    read_every_store(chain, mongo, redis)


def test_a_session_through_the_real_consumer_with_nul_and_huge_values(chain, mongo, redis):
    """The same kinds of values as above, sent to Kafka as a producer would and stored by the consumer."""
    import json

    from tests.helpers import consume_until_idle, send_raw

    now = datetime.now(UTC)
    t = now.isoformat()
    session, user = "kafka\u0000s", "ku\u0000"
    records = {
        "context_block": {"context_hash": "h-k", "doc_id": "doc-k", "created_at": t, "embedding_v1": [3.4e38] * DIM},
        "editor_recommend_options": {
            "insert_id": "a-k",
            "recommend_session_id": session,
            "doc_id": "doc-k",
            "context_hash": "h-k",
            "created_at": t,
            "user_id": user,
            "reco_category_input": "email\u0000",
            "P_vec": {"email": 1.7e308},
        },
        "editor_run_paraphrasing": {
            "insert_id": "b-k",
            "recommend_session_id": session,
            "source_recommend_event_id": "a-k",
            "created_at": t,
            "user_id": user,
            "target_category": "email",
        },
        "editor_selected_paraphrasing": {
            "insert_id": "c-k",
            "recommend_session_id": session,
            "source_recommend_event_id": "a-k",
            "created_at": t,
            "user_id": user,
            "was_accepted": True,
            "selected_option_index": 2**63 - 1,
            "correction_history_id": "d-k",
        },
        "correction_history": {
            "correction_history_id": "d-k",
            "created_at": t,
            "user": user,
            "field": "email\u0000",
            "user_prompt": "\u0000" * 10,
            "selected_index": 2**63 - 1,
        },
        "recommend_log": {"insert_id": "i-k", "recommend_session_id": session, "created_at": t, "latency_ms": 1.7e308},
    }
    for topic, record in records.items():
        send_raw(chain, topic, [json.dumps(record).encode()])
    consume_until_idle(chain)
    assert mongo.editor_recommend_options.find_one({"_id": "a-k"})["reco_category_input"] == "email\u0000"
    run_chain(chain, window=Window(now - timedelta(hours=1), now + timedelta(minutes=1)))
    seen = read_every_store(chain, mongo, redis)
    assert quarantined(mongo) == {}
    assert seen["profiles"]["user_profile:ku\u0000"]["user_embedding_v1"] == [3.4e38] * DIM
    assert mongo.training_examples.find_one({"_id": session})["consistency_flag"] == "high"
    assert len(seen["points"]) == 1
    assert [r[1] for r in seen["views"]["v_latency_hourly"]] == [1]


def test_profile_full_recomputes_every_user(chain, mongo, redis):
    """A rebuild cascades through the profile step too: `full` recomputes every user, touched or not."""
    logs = Logs(mongo)
    good_sessions(logs, h=10)
    logs.full_session(12, "later", a={"user_id": "ulater"}, b={"user_id": "ulater"}, c={"user_id": "ulater"})
    run_step("profile", hour(10), chain)
    assert "ulater" not in {d["_id"] for d in mongo.user_profile.find()}
    mongo.user_profile.delete_many({})
    run_step("profile", hour(10), chain, full=True)
    assert {d["_id"] for d in mongo.user_profile.find()} == {"gugood0", "gugood1", "gugood2", "ulater"}
    assert set(store_checks.redis_profiles(redis)) == {f"user_profile:{u}" for u in ("gugood0", "gugood1", "gugood2", "ulater")}


def test_one_non_v1_or_odd_length_embedding_never_truncates_a_users_mean(chain, mongo, redis):
    """user_embedding_v1 is the mean of v1 embeddings only; v1 embeddings of different lengths (an
    older consumer's) have no element-wise mean: that user is quarantined, never truncated."""
    logs = Logs(mongo)
    good_sessions(logs)
    for s in ("v1a", "v2b"):  # one user: a v1 embedding and a valid v2 one of another length
        logs.full_session(10, s, a={"user_id": "umix"}, b={"user_id": "umix"}, c={"user_id": "umix"})
    mongo.context_block.update_one({"_id": "h-v2b"}, {"$set": {"embedding_v1": [0.5] * 5, "embedding_version": "v2"}})
    for s in ("oddA", "oddB"):  # another user: two v1 embeddings of different lengths
        logs.full_session(10, s, a={"user_id": "uodd"}, b={"user_id": "uodd"}, c={"user_id": "uodd"})
    mongo.context_block.update_one({"_id": "h-oddB"}, {"$set": {"embedding_v1": [0.5] * 5}})
    summaries = run_chain(chain)
    seen = read_every_store(chain, mongo, redis)
    mixed = seen["profiles"]["user_profile:umix"]
    assert mixed["user_embedding_v1"] == [0.5] * DIM and mixed["embedding_interaction_count"] == 1
    assert summaries["profile"]["quarantined"] == {"profile_not_computable": 1}
    assert quarantined(mongo) == {"profile:user:uodd": "profile_not_computable"}
    assert "user_profile:uodd" not in seen["profiles"] and len(seen["profiles"]) == 4  # the rest published


def test_a_user_row_refused_by_the_views_is_quarantined_then_released(chain, mongo, redis):
    """A fact_users row PostgreSQL refuses quarantines that user ("user:<id>") and the rest is
    exported; the next views run that writes the row releases it (not only a full run)."""
    logs = Logs(mongo)
    good_sessions(logs)
    logs.full_session(10, "bad", a={"user_id": "ubad"}, b={"user_id": "ubad"}, c={"user_id": "ubad"})
    run_step("views", hour(5), chain)  # creates the tables, empty

    def alter(sql: str) -> None:
        conn = psycopg2.connect(chain.analytics_db_uri)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    # A row PostgreSQL refuses, as a data error (class 23).
    alter("alter table sentencify.fact_users add constraint refuse_ubad check (user_id <> 'ubad')")
    summary = run_step("views", hour(10), chain)
    assert summary["quarantined"] == {"row_refused": 1}
    assert quarantined(mongo) == {"views:user:ubad": "row_refused"}
    assert store_checks.postgres_rows(chain, "select count(*) from sentencify.fact_users") == [(3,)]
    alter("alter table sentencify.fact_users drop constraint refuse_ubad")
    run_step("views", hour(10), chain)
    assert quarantined(mongo) == {}
    assert store_checks.postgres_rows(chain, "select count(*) from sentencify.fact_users") == [(4,)]


def test_a_session_whose_join_mongodb_refuses_is_quarantined_and_the_rest_published(chain, mongo, redis, monkeypatch):
    """MongoDB refuses an aggregation whose result for one session passes 16 MB (BSONObjectTooLarge;
    the local server does not, so the refusal is injected): that session is quarantined, not taken
    for an orphan, and the window (and a full rebuild) is published without it; once its join
    succeeds it leaves quarantine."""
    from pymongo.errors import OperationFailure

    from sentencify.steps import join

    logs = Logs(mongo)
    good_sessions(logs)
    logs.full_session(10, "huge")
    real_run = join.aggregate

    def refusing(db, match, *args):
        if match == {} or "huge" in match["recommend_session_id"]["$in"]:
            raise OperationFailure(
                "BSONObj size: 17544285 (0x10BB45D) is invalid. Size must be between 0 and 16793600(16MB)", 10334
            )
        return real_run(db, match, *args)

    monkeypatch.setattr(join, "aggregate", refusing)  # the window's batches and the rebuild's stream
    summaries = run_chain(chain)
    assert summaries["etl"]["quarantined"] == {"join_refused": 1}
    assert quarantined(mongo) == {"etl:huge": "join_refused"}
    assert sorted(d["_id"] for d in mongo.training_examples.find()) == ["good0", "good1", "good2"]
    assert mongo.etl_rejects.count_documents({}) == 0  # not an orphan: it has an A
    summary = run_step("etl", hour(10), chain, full=True)
    assert summary["quarantined"] == {"join_refused": 1} and mongo.training_examples.count_documents({}) == 3
    read_every_store(chain, mongo, redis)
    # Not about the data (a lost connection): the run fails, as a store that is down must.
    monkeypatch.setattr(join, "aggregate", lambda db, match, *a: (_ for _ in ()).throw(OperationFailure("not primary", 10107)))
    with pytest.raises(OperationFailure):
        run_step("etl", hour(10), chain)
    monkeypatch.setattr(join, "aggregate", real_run)
    run_step("etl", hour(10), chain)
    assert quarantined(mongo) == {} and mongo.training_examples.count_documents({}) == 4

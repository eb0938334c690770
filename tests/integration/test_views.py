"""The views step: MongoDB -> PostgreSQL facts -> `sql_views/` views, against real servers."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg2
import pytest

from sentencify.stack.services import PostgresService, services
from sentencify.steps.etl import run_etl
from sentencify.steps.profiles import run_profile
from sentencify.steps.views import run_views
from tests.chain_data import DAY, Logs, at, hour

NOW = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture
def analytics(stack_settings):
    """A fresh analytics database per test, owned by `sentencify`, as ANALYTICS_DB_URI points at."""
    pg = next(s for s in services(stack_settings) if isinstance(s, PostgresService))
    pg.provision()  # the reader role, as `stack up` makes it
    name = f"analytics_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    conn = psycopg2.connect(f"postgresql://sentencify@127.0.0.1:{stack_settings.postgres_port}/{name}")
    yield conn, f"postgresql://sentencify_reader@127.0.0.1:{stack_settings.postgres_port}/{name}"
    conn.close()
    pg.psql(f"drop database {name} with (force)")


def rows(conn, sql: str) -> list[tuple]:
    with conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def _data(mongo):
    logs = Logs(mongo)
    logs.full_session(10, "s1")  # A B C(accepted) D E
    logs.e(10, "s2"), logs.a(10, "s2", user_id="u2", reco_category_input="report"), logs.b(10, "s2", user_id="u2")
    logs.a(10, "s3", created_at=at(9, 30))  # no E: low; event hour 9
    logs.b(10, "s4", user_id="u3")  # orphan
    for ms in (10, 20, 30, 40, 100):
        logs.put("I", 10, insert_id=f"i{ms}", recommend_session_id="s1", created_at=at(10, 1), latency_ms=ms)
    mongo.dead_letters.insert_one(
        {
            "_id": "t:0:1",
            "topic": "t.recommend_log",
            "partition": 0,
            "offset": 1,
            "reason": "not_json",
            "error": "x",
            "failed_at": DAY + timedelta(hours=10, minutes=5),
            "ingested_at": DAY + timedelta(hours=10, minutes=5),
        }
    )
    return logs


def _run(mongo, redis, conn, h):
    run_etl(mongo, hour(h), now=NOW)
    run_profile(mongo, redis, hour(h), now=NOW)
    return run_views(mongo, conn, hour(h), redis_client=redis)


def test_every_view_returns_the_hand_computed_numbers(settings, mongo, redis, analytics):
    from sentencify.steps.runner import run_step

    conn, _ = analytics
    _data(mongo)
    run_step("etl", hour(10), settings)  # through the runner: it records the runs the pipeline state shows
    run_step("profile", hour(10), settings)
    mongo.user_profile.delete_one({"_id": "u2"})  # so coverage is not trivially 100%
    from consumer.status import StatusPublisher

    redis.flushdb()  # other tests' consumers report their groups' lag to the same Redis
    publishers = []
    for n, partition, lag in ((1, "t[0]", 7), (2, "t[1]", 5)):  # two consumers of one group report their partitions' lag
        status = StatusPublisher(None, "ingest")
        status._redis, status.key, status.lag_key = (
            redis,
            f"sentencify:consumer:ingest:host:{n}",
            "sentencify:consumer_lag:ingest",
        )
        status.maybe_publish({partition: lag}, {"stored": 10, "duplicates": 0, "dead_letters": 1})
        publishers.append(status)
    run_views(mongo, conn, hour(10), redis_client=redis)

    h9, h10 = DAY + timedelta(hours=9), DAY + timedelta(hours=10)
    # A: s1, s2, s3 -> 3 recommendations; E: s1, s2 -> 2 contexts; users with an A: u1, u2; with a profile: u1
    assert rows(
        conn,
        "select total_recommendations, micro_contexts, users_with_recommendations, users_with_profile, "
        "user_coverage from sentencify.v_kpis",
    ) == [(3, 2, 2, 1, 0.5)]
    # s3's A was shown at 09:30 (event time), though ingested in the 10:00 window
    assert rows(
        conn,
        "select event_hour, recommendations, paraphrase_runs, selections, accepted "
        "from sentencify.v_traffic_hourly order by event_hour",
    ) == [(h9, 1, 0, 0, 0), (h10, 2, 3, 1, 1)]
    assert rows(
        conn,
        "select category, sum(recommendations)::bigint from sentencify.v_category_distribution "
        "group by category order by category",
    ) == [("email", 2), ("report", 1)]
    # latencies 10, 20, 30, 40, 100: avg 40; p95 = 40 + 0.8 * (100 - 40) = 88 (linear interpolation)
    ((requests, avg, p95),) = rows(conn, "select requests, avg_latency_ms, p95_latency_ms from sentencify.v_latency_hourly")
    assert (requests, avg, p95) == (5, 40.0, pytest.approx(88.0))
    assert rows(conn, "select accepted, recommendations, acceptance_rate from sentencify.v_acceptance_daily") == [(1, 3, 1 / 3)]
    assert rows(
        conn, "select event_hour, accepted, recommendations, acceptance_rate from sentencify.v_acceptance_hourly order by 1"
    ) == [(h9, 0, 1, 0.0), (h10, 1, 2, 0.5)]
    assert rows(conn, "select category, sum(examples)::bigint from sentencify.v_quality group by 1 order by 1") == [("email", 3)]
    # freshness: etl and profile ran (through the runner), vectors never did, the raw logs are weeks old
    fresh = {
        stage: (status, newest)
        for stage, status, newest in rows(conn, "select stage, status, newest from sentencify.v_freshness")
    }
    assert [r[0] for r in rows(conn, "select stage from sentencify.v_freshness order by stage_order")] == [
        "raw_logs",
        "training_examples",
        "user_profile",
        "redis_profiles",
        "qdrant_points",
        "views",
    ]
    assert fresh["training_examples"] == fresh["user_profile"] == ("fresh", hour(10).end)
    assert fresh["redis_profiles"] == ("stale", None)  # the test emptied Redis after the profile run: and it shows
    assert fresh["qdrant_points"] == ("stale", None) and fresh["raw_logs"][0] == "stale"
    # funnel by session: s1 A->B->C->accepted, s2 A->B, s3 A, s4 B without A (not counted)
    assert rows(conn, "select step_order, sessions from sentencify.v_funnel order by step_order") == [
        (1, 3),
        (2, 2),
        (3, 1),
        (4, 1),
    ]
    assert rows(
        conn, "select consistency_flag, reason, sum(examples)::bigint from sentencify.v_quality group by 1, 2 order by 1, 2"
    ) == [("high", "none", 2), ("low", "missing_context", 1)]
    assert rows(conn, "select created_hour, golden_examples, golden_examples_total from sentencify.v_golden_data") == [
        (h10, 2, 2)
    ]
    assert rows(conn, "select day, reason, dead_letters from sentencify.v_dead_letters_daily") == [
        (date(2026, 11, 1), "not_json", 1)
    ]
    assert [r[0] for r in rows(conn, "select step from sentencify.v_pipeline_state order by step")] == ["etl", "profile", "views"]
    assert rows(conn, "select consumer_group, consumers, lag from sentencify.v_consumer_lag") == [("ingest", 2, 12)]

    # consumer 1 stops; consumer 2 takes t[0] over and reports it: no double count, one consumer alive
    redis.delete(publishers[0].key)
    publishers[1].maybe_publish({"t[0]": 3, "t[1]": 5}, {"stored": 10, "duplicates": 0, "dead_letters": 1}, force=True)
    run_views(mongo, conn, hour(10), redis_client=redis)
    assert rows(conn, "select consumer_group, consumers, lag from sentencify.v_consumer_lag") == [("ingest", 1, 8)]
    # every consumer stopped: the group's last lag stays visible
    redis.delete(publishers[1].key)
    run_views(mongo, conn, hour(10), redis_client=redis)
    assert rows(conn, "select consumer_group, consumers, lag from sentencify.v_consumer_lag") == [("ingest", 0, 8)]
    # ... for a week; after that the group is taken as gone
    from sentencify.steps.views import LAG_REPORTS_KEPT, consumer_lag

    assert consumer_lag(redis, now=datetime.now(UTC) + LAG_REPORTS_KEPT + timedelta(minutes=1)) == []


def _dump(conn) -> dict:
    tables = (
        "fact_traffic",
        "fact_categories",
        "fact_latency",
        "fact_dead_letters",
        "fact_examples",
        "fact_sessions",
        "fact_users",
    )
    return {t: sorted(rows(conn, f"select * from sentencify.{t}"), key=repr) for t in tables}


def test_running_a_window_twice_gives_the_same_rows_and_late_data_adds_to_its_hour(mongo, redis, analytics):
    conn, _ = analytics
    logs = _data(mongo)
    _run(mongo, redis, conn, 10)
    first = _dump(conn)
    _run(mongo, redis, conn, 10)
    assert _dump(conn) == first

    logs.c(12, "s2", user_id="u2", created_at=at(10, 0, 30), was_accepted=True, correction_history_id=None)  # late C
    _run(mongo, redis, conn, 12)
    h10 = DAY + timedelta(hours=10)
    assert rows(conn, f"select selections, accepted from sentencify.v_traffic_hourly where event_hour = '{h10.isoformat()}'") == [
        (2, 2)
    ]
    assert rows(conn, "select step_order, sessions from sentencify.v_funnel order by step_order") == [
        (1, 3),
        (2, 2),
        (3, 2),
        (4, 2),
    ]
    _run(mongo, redis, conn, 10)  # an old window re-run later: its own rows only, nothing doubled
    assert rows(conn, f"select selections from sentencify.v_traffic_hourly where event_hour = '{h10.isoformat()}'") == [(2,)]


def test_superset_reads_with_a_role_that_cannot_write(mongo, redis, analytics):
    conn, reader_uri = analytics
    _data(mongo)
    _run(mongo, redis, conn, 10)
    reader = psycopg2.connect(reader_uri)
    try:
        assert rows(reader, "select total_recommendations from sentencify.v_kpis") == [(3,)]
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            rows(reader, "delete from sentencify.fact_traffic")
    finally:
        reader.close()

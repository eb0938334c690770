"""No timing of runs can make the chain miss, regress or double-count data (pipeline.md, 'Windows and late data').

Every run goes through `run_step`, the code `sentencify run` and the Airflow operators share:
the step's lease, its progress, and the run record written only after every store.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pymongo import MongoClient

from sentencify import vectorstore
from sentencify.stack.process import free_port
from sentencify.steps import etl as etl_module
from sentencify.steps import progress
from sentencify.steps.lease import LEASES
from sentencify.steps.profiles import REDIS_KEY
from sentencify.steps.runner import STEPS, run_step
from sentencify.window import Window
from tests.chain_data import DAY, Logs, hour
from tests.integration.test_views import analytics, rows  # noqa: F401 (fixture)


@pytest.fixture
def chain(settings, analytics, tmp_path, redis):  # noqa: F811
    """Settings for the whole chain: this test's MongoDB database, a fresh analytics database, local Qdrant."""
    db_name = analytics[0].get_dsn_parameters()["dbname"]
    return dataclasses.replace(
        settings,
        qdrant_url=None,
        qdrant_path=str(tmp_path / "qdrant"),
        analytics_db_uri=f"postgresql://sentencify@127.0.0.1:{settings.postgres_port}/{db_name}",
    )


def run_chain(s, window: Window) -> None:
    for step in STEPS:
        run_step(step, window, s)


def example(db, session: str) -> dict | None:
    return db.training_examples.find_one({"_id": session})


def point_payload(s, session: str) -> dict | None:
    qc = vectorstore.client(s)
    try:
        found = qc.retrieve(s.qdrant_collection, [vectorstore.point_id(session)], with_payload=True)
    finally:
        qc.close()
    return found[0].payload if found else None


def kpis(s) -> tuple:
    conn = psycopg2.connect(s.analytics_db_uri)
    try:
        return rows(conn, "select total_recommendations, micro_contexts from sentencify.v_kpis")[0]
    finally:
        conn.close()


def test_a_record_visible_after_its_hours_run_is_processed_by_the_next_run(chain, mongo, redis):
    s = chain
    now = datetime.now(UTC).replace(microsecond=0)
    logs = Logs(mongo)
    early = now - timedelta(minutes=20)
    logs.e(10, "s1", ingested=early), logs.a(10, "s1", ingested=early), logs.b(10, "s1", ingested=early)
    w1 = Window(now - timedelta(hours=1), now)
    run_chain(s, w1)
    assert example(mongo, "s1")["was_accepted"] is False

    # Stamped inside w1 (a consumer whose clock lags, a write in flight at the boundary), visible only now.
    late = now - timedelta(seconds=30)
    logs.c(10, "s1", ingested=late, was_accepted=True), logs.d(10, "s1", ingested=late)
    run_chain(s, Window(now, now + timedelta(hours=1)))

    assert example(mongo, "s1")["was_accepted"] is True
    profile = mongo.user_profile.find_one({"_id": "u1"})
    assert profile["recommend_accept_rate"] == 1.0
    assert '"recommend_accept_rate":1.0' in redis.get(REDIS_KEY.format(user_id="u1")).decode()
    assert point_payload(s, "s1")["was_accepted"] is True
    conn = psycopg2.connect(s.analytics_db_uri)
    try:
        assert rows(conn, "select sum(selections), sum(accepted) from sentencify.v_traffic_hourly") == [(1, 1)]
    finally:
        conn.close()


def test_a_skipped_hour_and_an_upstream_failure_fixed_later_are_caught_up(chain, mongo, settings):
    s = chain
    logs = Logs(mongo)
    for h in (10, 11, 12, 13, 14):
        logs.full_session(h, f"s{h}")
    run_chain(s, hour(10))
    # hour 11 has no run at all (the scheduler was down)
    run_chain(s, hour(12))
    assert {d["_id"] for d in mongo.training_examples.find()} == {"s10", "s11", "s12"}
    assert point_payload(s, "s11") is not None

    # hour 13: the ETL fails for good; the downstream steps run anyway (a manual trigger). A plain
    # error (2): 91, ShutdownInProgress, makes the driver drop the server, so the failed run's lease
    # release fails too and the next run waits out LEASE_TTL_S (60 s).
    admin = MongoClient(settings.mongo_uri).admin
    admin.command(
        {"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": {"failCommands": ["aggregate"], "errorCode": 2}}
    )
    try:
        with pytest.raises(Exception, match="failCommand"):
            run_step("etl", hour(13), s)
    finally:
        admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    for step in ("profile", "vectors", "views"):
        run_step(step, hour(13), s)
    assert example(mongo, "s13") is None
    assert progress.safe_until(mongo, "vectors") <= progress.safe_until(mongo, "etl") == hour(12).end
    assert not mongo.pipeline_runs.find_one({"_id": f"etl:{hour(13).start.isoformat()}"})

    run_chain(s, hour(14))  # fixed: the next run covers 13 as well, and so do the steps after it
    assert {d["_id"] for d in mongo.training_examples.find()} == {f"s{h}" for h in (10, 11, 12, 13, 14)}
    assert all(point_payload(s, f"s{h}") for h in (10, 11, 12, 13, 14))
    assert kpis(s) == (5, 5)
    for step in STEPS:
        assert progress.safe_until(mongo, step) == hour(14).end


def test_views_over_any_set_of_windows_count_each_record_once(chain, mongo):
    s = chain
    logs = Logs(mongo)
    for h, n in ((10, 1), (11, 2), (12, 1)):
        for i in range(n):
            logs.full_session(h, f"s{h}-{i}")
    for step in ("etl", "profile"):
        run_step(step, Window(hour(10).start, hour(12).end), s)
    w1, w3 = hour(10), hour(12)
    # the sequence: W1, W3, [W1 start, W3 end), then W1 again
    for window in (w1, w3, Window(w1.start, w3.end), w1):
        run_step("views", window, s)
        assert kpis(s)[0] <= 4
    assert kpis(s) == (4, 4)


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(windows=st.lists(st.tuples(st.integers(0, 11), st.integers(1, 6)), min_size=1, max_size=4))
def test_views_property_any_windows_any_order(chain, mongo, windows):
    """Half-hour windows over 10:00-16:00, in any order: never a record counted twice; all of them once covered."""
    s = chain
    mongo.client.drop_database(s.mongo_db)
    logs = Logs(mongo)
    for h in range(10, 16):
        logs.full_session(h, f"s{h}")
    for step in ("etl", "profile"):
        run_step(step, Window(hour(10).start, hour(15).end), s)
    half = timedelta(minutes=30)
    for start, length in windows:
        w = Window(hour(10).start + start * half, hour(10).start + (start + length) * half)
        run_step("views", w, s)
        total, _ = kpis(s)
        assert total <= 6
    run_step("views", Window(hour(10).start, hour(16).end), s)
    assert kpis(s) == (6, 6)


def test_two_runs_of_one_step_at_once_end_as_if_run_one_after_the_other(chain, mongo, monkeypatch):
    """A backfill beside the hourly run, the interleaving forced: the older read never overwrites the newer."""
    s = chain
    logs = Logs(mongo)
    logs.e(10, "s1"), logs.a(10, "s1"), logs.b(10, "s1")
    read_done, go_on = threading.Event(), threading.Event()
    real = etl_module.build_window
    calls = []

    def slow_first_read(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:  # the first run has read (no C yet) and now stalls before publishing
            read_done.set()
            assert go_on.wait(30)
        return out

    monkeypatch.setattr(etl_module, "build_window", slow_first_read)
    finished: list[str] = []
    first = threading.Thread(target=lambda: (run_step("etl", hour(10), s), finished.append("first")))
    first.start()
    assert read_done.wait(30)
    logs.c(10, "s1", was_accepted=True, correction_history_id=None)  # newer data arrives meanwhile
    second = threading.Thread(target=lambda: (run_step("etl", hour(10), s), finished.append("second")))
    second.start()
    second.join(2)
    assert second.is_alive() and finished == [], "the second run must wait for the first run's lease"
    go_on.set()
    first.join(30)
    second.join(30)
    assert finished == ["first", "second"]
    assert example(mongo, "s1")["was_accepted"] is True  # the newer read is what stays published
    assert mongo[LEASES].count_documents({"holder": {"$ne": None}}) == 0  # released (the token stays)


def test_a_dead_holders_lease_expires_and_the_next_run_proceeds(chain, mongo):
    s = chain
    Logs(mongo).full_session(10, "s1")
    mongo[LEASES].insert_one({"_id": "etl", "holder": "crashed-host:1:x", "expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    run_step("etl", hour(10), s)
    assert example(mongo, "s1") is not None


def test_redis_down_fails_the_profile_run_which_is_not_recorded_and_the_retry_completes(chain, mongo, redis):
    s = chain
    Logs(mongo).full_session(10, "s1")
    down = dataclasses.replace(s, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(Exception, match=r"(?i)connect"):
        run_step("profile", hour(10), down)
    assert mongo.pipeline_runs.count_documents({"step": "profile"}) == 0
    assert progress.safe_until(mongo, "profile") is None
    assert redis.get(REDIS_KEY.format(user_id="u1")) is None

    run_step("profile", hour(10), s)
    assert mongo.pipeline_runs.count_documents({"step": "profile"}) == 1
    assert redis.get(REDIS_KEY.format(user_id="u1")) is not None
    assert progress.safe_until(mongo, "profile") == hour(10).end


def test_rerunning_an_old_hour_changes_nothing_and_never_moves_progress_back(chain, mongo):
    s = chain
    logs = Logs(mongo)
    for h in (10, 11):
        logs.full_session(h, f"s{h}")
    run_chain(s, hour(11))
    before = {
        c: sorted(mongo[c].find({}, {"processed_at": 0, "updated_at": 0}), key=lambda d: d["_id"])
        for c in ("training_examples", "user_profile")
    }
    run_chain(s, hour(10))
    after = {
        c: sorted(mongo[c].find({}, {"processed_at": 0, "updated_at": 0}), key=lambda d: d["_id"])
        for c in ("training_examples", "user_profile")
    }
    assert after == before and kpis(s) == (2, 2)
    for step in STEPS:
        assert progress.safe_until(mongo, step) == hour(11).end
    assert hour(11).end > DAY


def test_a_run_with_no_window_processes_everything_not_yet_processed_up_to_its_start(chain, mongo, redis):
    """pipeline.md: a run with no window (an Airflow run with no logical date) covers [progress, its start)."""
    s = chain
    logs = Logs(mongo)
    logs.full_session(10, "old")  # hours ago, never processed
    recent = datetime.now(UTC) - timedelta(seconds=30)
    logs.e(10, "recent", ingested=recent), logs.a(10, "recent", ingested=recent), logs.b(10, "recent", ingested=recent)
    for step in STEPS:
        summary = run_step(step, None, s)
        assert summary["unwindowed"] is True and summary["window"].startswith("none: everything up to ")
    assert {d["_id"] for d in mongo.training_examples.find()} == {"old", "recent"}
    assert point_payload(s, "old") is not None and point_payload(s, "recent") is not None
    assert kpis(s) == (2, 2)
    runs = list(mongo.pipeline_runs.find({"step": "etl"}))
    assert len(runs) == 1 and runs[0]["_id"].startswith("etl:up-to:") and runs[0]["unwindowed"] is True
    assert runs[0]["window_start"] == progress.EPOCH
    first = progress.safe_until(mongo, "etl")
    # The progress stops a look-back before the run's start (MongoDB's time), so "recent" is read again next time.
    assert runs[0]["window_end"] - progress.lookback(s.clock_skew_s) == first < recent
    assert progress.safe_until(mongo, "vectors") <= first  # capped by its upstream, as a windowed run
    assert progress.safe_until(mongo, "views") <= min(first, progress.safe_until(mongo, "profile"))

    # The next run with no window starts from the progress and takes the newer record; then an hourly run still works.
    logs.c(10, "recent", was_accepted=True, correction_history_id=None)
    second = run_step("etl", None, s)
    assert second["read"].startswith(f"[{first.isoformat()}, ")
    assert example(mongo, "recent")["was_accepted"] is True
    assert mongo.pipeline_runs.count_documents({"step": "etl", "unwindowed": True}) == 2
    run_step("etl", hour(10), s)
    assert mongo.pipeline_runs.count_documents({"step": "etl"}) == 3

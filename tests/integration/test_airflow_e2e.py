"""One chain run through the running scheduler: trigger the ETL over the REST API, the assets do the rest."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from sentencify import stack
from sentencify.airflow_api import AirflowApi, AirflowApiError
from sentencify.stack.airflow import ADMIN_USER, admin_password, airflow_bin, airflow_env, metadata_uri
from sentencify.stack.process import free_port
from tests.chain_data import Logs, hour
from tests.helpers import services_started

DAGS = ["sentencify_etl", "sentencify_profile", "sentencify_vectors", "sentencify_views"]


@pytest.fixture(scope="module")
def running_airflow(stack_settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow-e2e")
    s = dataclasses.replace(
        stack_settings,
        stack_dir=root,
        mongo_db="e2e_chain",
        qdrant_path=str(root / "qdrant"),
        airflow_port=free_port(),
        airflow_metadata_db="airflow_e2e",
        run_deadline_s=40,  # short, for the deadline test; other tests' runs end well before or were queued after it
    )
    with services_started(s, stack.AIRFLOW_SERVICES):
        yield s


def test_a_triggered_chain_runs_etl_profile_vectors_views_in_order_for_the_same_window(running_airflow):
    from pymongo import MongoClient

    s = running_airflow
    client = MongoClient(s.mongo_uri, tz_aware=True)
    db = client[s.mongo_db]
    client.drop_database(s.mongo_db)
    logs = Logs(db)
    for i in range(4):
        logs.full_session(10, f"s{i}")

    api = AirflowApi(f"http://127.0.0.1:{s.airflow_port}", ADMIN_USER, admin_password(s))
    api.wait_for_dags(DAGS)
    for dag in DAGS:
        api.unpause(dag)
    window = hour(10)
    api.trigger("sentencify_etl", window.start, run_id="e2e_chain")

    key = window.start.isoformat()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not db.pipeline_runs.find_one({"_id": f"views:{key}"}):
        etl = api.run("sentencify_etl", "e2e_chain")
        assert etl["state"] != "failed", "the ETL run failed: see the scheduler's task logs"
        time.sleep(2)
    runs = {r["step"]: r for r in db.pipeline_runs.find({"window_start": window.start})}
    assert set(runs) == {"etl", "profile", "vectors", "views"}, f"chain did not complete: {sorted(runs)}"
    assert (
        runs["etl"]["finished_at"]
        < runs["profile"]["finished_at"]
        < runs["vectors"]["finished_at"]
        < runs["views"]["finished_at"]
    )
    assert all(r["window_end"] == window.end for r in runs.values())
    assert api.run("sentencify_etl", "e2e_chain")["state"] == "success"
    for dag in ("sentencify_profile", "sentencify_vectors", "sentencify_views"):
        triggered = [r for r in api.runs(dag) if r["run_type"] == "asset_triggered"]
        assert triggered and any(r["state"] == "success" for r in triggered), (dag, triggered)
    assert db.training_examples.count_documents({"consistency_flag": "high"}) == 4
    assert db.user_profile.count_documents({}) == 1
    client.close()


def test_the_airflow_ui_links_to_the_dashboard(running_airflow):
    from sentencify.dashboard import dashboard_url

    s = running_airflow
    api = AirflowApi(f"http://127.0.0.1:{s.airflow_port}", ADMIN_USER, admin_password(s))
    views = [v for p in api.plugins() for v in p.get("external_views", [])]
    assert {"name": "Sentencify dashboard", "href": dashboard_url(s), "category": "browse"}.items() <= next(
        v for v in views if v["name"] == "Sentencify dashboard"
    ).items()


def test_five_quick_upstream_runs_lead_every_downstream_step_to_cover_all_five_hours(running_airflow):
    """apache/airflow#56050: with max_active_runs=1, asset events that arrive during a run wait for
    another event. The downstream steps must cover all five hours without one."""
    from pymongo import MongoClient

    from sentencify.steps import progress

    s = running_airflow
    client = MongoClient(s.mongo_uri, tz_aware=True)
    db = client[s.mongo_db]
    client.drop_database(s.mongo_db)
    logs = Logs(db)
    hours = range(12, 17)
    for h in hours:
        logs.full_session(h, f"q{h}", a={"user_id": f"user{h}"})
    api = AirflowApi(f"http://127.0.0.1:{s.airflow_port}", ADMIN_USER, admin_password(s))
    api.wait_for_dags(DAGS)
    for dag in DAGS:
        api.unpause(dag)
    for h in hours:  # as fast as the API takes them
        api.trigger("sentencify_etl", hour(h).start, run_id=f"quick_{h}")

    last_end = hour(hours[-1]).end
    deadline = time.monotonic() + 420
    steps = ("etl", "profile", "vectors", "views")
    while time.monotonic() < deadline:
        covered = {step: progress.safe_until(db, step) for step in steps}
        if all(v is not None and v >= last_end for v in covered.values()):
            break
        time.sleep(2)
    assert all(v is not None and v >= last_end for v in covered.values()), covered
    assert {d["_id"] for d in db.training_examples.find()} == {f"q{h}" for h in hours}
    assert {d["_id"] for d in db.user_profile.find()} >= {f"user{h}" for h in hours}
    vectors = db.pipeline_runs.find_one({"step": "vectors"}, sort=[("finished_at", -1)])
    assert sum(vectors["summary"]["real_points"].values()) >= len(hours)  # and the earlier test's points
    client.close()


def _api(s) -> AirflowApi:
    api = AirflowApi(f"http://127.0.0.1:{s.airflow_port}", ADMIN_USER, admin_password(s))
    api.wait_for_dags(DAGS)
    for dag in DAGS:
        api.unpause(dag)
    return api


def _fresh_db(s):
    from pymongo import MongoClient

    client = MongoClient(s.mongo_uri, tz_aware=True)
    client.drop_database(s.mongo_db)
    return client, client[s.mongo_db]


def _wait_success(api, dag: str, *, run_id: str | None = None, since: datetime | None = None, timeout: float = 300) -> dict:
    """The run `run_id`, or the first asset-triggered run queued after `since`, once it succeeded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if run_id is not None:
                runs = [api.run(dag, run_id)]
            else:
                runs = [
                    r
                    for r in api.runs(dag)
                    if r["run_type"] == "asset_triggered" and datetime.fromisoformat(r["run_after"]) >= since
                ]
        except AirflowApiError as exc:  # the local api-server's metadata pool, briefly short on 2 busy cores
            print(f"retrying: {exc}")
            time.sleep(2)
            continue
        failed = [r for r in runs if r["state"] == "failed"]
        assert not failed, f"{dag} failed: {failed}\n" + api.task_log(dag, failed[0]["dag_run_id"])[-6000:]
        done = [r for r in runs if r["state"] == "success"]
        if done:
            return done[0]
        time.sleep(2)
    raise AssertionError(f"{dag}: no successful run {run_id or f'after {since}'} in {timeout:.0f}s")


def test_runs_with_no_logical_date_succeed_on_each_dag_and_the_steps_after_follow(running_airflow):
    """interfaces.md: a run with no logical date processes everything not yet processed up to its start."""
    s = running_airflow
    client, db = _fresh_db(s)
    logs = Logs(db)
    for i in range(3):
        logs.full_session(10, f"n{i}")
    api = _api(s)
    since = datetime.now(UTC)
    api.trigger("sentencify_etl", None, run_id="no_date_etl")
    assert api.run("sentencify_etl", "no_date_etl")["logical_date"] is None
    _wait_success(api, "sentencify_etl", run_id="no_date_etl")
    for dag in DAGS[1:]:  # the assets chain the rest, each run with no window either
        _wait_success(api, dag, since=since)
    assert db.training_examples.count_documents({"consistency_flag": "high"}) == 3
    assert db.user_profile.find_one({"_id": "u1"})["paraphrase_execution_count"] == 3
    import psycopg2

    with psycopg2.connect(s.analytics_db_uri) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from sentencify.fact_examples where example_id = any(%s)", (["n0", "n1", "n2"],))
        assert cur.fetchone() == (3,)
    for dag in DAGS[1:]:  # and each step alone
        api.trigger(dag, None, run_id=f"no_date_{dag}")
        _wait_success(api, dag, run_id=f"no_date_{dag}")
    client.close()


def test_an_asset_event_made_by_hand_without_windows_runs_the_step_and_the_chain_follows(running_airflow):
    s = running_airflow
    client, db = _fresh_db(s)
    Logs(db).full_session(11, "hand0", a={"user_id": "hand-user"}, b={"user_id": "hand-user"}, c={"user_id": "hand-user"})
    api = _api(s)
    since = datetime.now(UTC)
    from sentencify.steps.runner import run_step

    run_step("etl", hour(11), s)  # the examples exist; the profile step has not run
    # the asset URI names the Mongo connection's host and database (sentencify_airflow.lineage)
    api.create_asset_event(f"mongodb://127.0.0.1:{s.mongo_port}/{s.mongo_db}/training_examples", extra={})
    for dag in DAGS[1:]:
        _wait_success(api, dag, since=since)
    assert db.user_profile.find_one({"_id": "hand-user"}) is not None
    client.close()


def test_a_backfill_with_reprocess_completed_recomputes_hours_that_already_ran(running_airflow):
    s = running_airflow
    client, db = _fresh_db(s)
    logs = Logs(db)
    hours = (18, 19)
    for h in hours:
        logs.full_session(h, f"b{h}")
    api = _api(s)
    for h in hours:
        api.trigger("sentencify_etl", hour(h).start, run_id=f"before_backfill_{h}")
    for h in hours:
        _wait_success(api, "sentencify_etl", run_id=f"before_backfill_{h}")

    def finished(step: str, h: int) -> datetime | None:
        run = db.pipeline_runs.find_one({"_id": f"{step}:{hour(h).start.isoformat()}"})
        return None if run is None else run["finished_at"]

    keys = [(step, h) for step in ("etl", "views") for h in hours]

    def wait_until(done, timeout: float, what: str) -> dict:
        """Until `done(key, finished_at)` for every key; if the views lag, once, a run with no window:
        Airflow can hold an asset event that arrives while the run it would join is being created
        until the next event comes (apache/airflow#56050), and the next hourly run releases it."""
        for attempt in range(2):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                state = {key: done(key, finished(*key)) for key in keys}
                if all(state.values()):
                    return state
                time.sleep(2)
            assert all(v for (step, _), v in state.items() if step == "etl"), state  # the ETL itself is not late
            if attempt == 0:
                print(f"{what}: downstream windows waiting for the next event: {state}")
                api.trigger("sentencify_etl", None, run_id=f"release_{what}")
        raise AssertionError(f"{what}: {state}")

    wait_until(lambda key, at: at is not None, 240, "first_runs")
    before = {key: finished(*key) for key in keys}
    db.training_examples.delete_one({"_id": "b18"})  # a lost example: only redoing hour 18 brings it back

    span = ["--from-date", hour(hours[0]).start.isoformat(), "--to-date", hour(hours[-1]).start.isoformat()]
    out = subprocess.run(
        [airflow_bin(), "backfill", "create", "--dag-id", "sentencify_etl", "--reprocess-behavior", "completed", *span],
        env=airflow_env(s),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    wait_until(lambda key, at: at is not None and at > before[key], 240, "backfill")  # both hours redone, views too
    backfilled = [r for r in api.runs("sentencify_etl") if r["run_type"] == "backfill"]
    assert sorted(r["logical_date"][:19] for r in backfilled) == [hour(h).start.isoformat()[:19] for h in hours]
    assert db.training_examples.find_one({"_id": "b18"})["consistency_flag"] == "high"
    client.close()


def test_a_run_past_its_deadline_fires_the_callback_once(running_airflow):
    """The ETL's deadline: RUN_DEADLINE_S (40 s here) after the end of the hour it covers. The run
    waits for the step's lease, held here, so it is still running when the deadline passes."""
    import psycopg2

    from sentencify.steps.lease import StepLease

    s = running_airflow
    client, db = _fresh_db(s)
    api = _api(s)
    hold, held = threading.Event(), threading.Event()

    def holder():
        with StepLease(db, "etl"):
            held.set()
            hold.wait(300)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert held.wait(30)
    logical = datetime.now(UTC) - timedelta(hours=1) + timedelta(seconds=5)  # its hour ends in 5 s: due in 45 s
    try:
        api.trigger("sentencify_etl", logical, run_id="late_run")
        query = """
            select d.missed, c.state, c.output from deadline d
            join dag_run r on r.id = d.dagrun_id left join callback c on c.id = d.callback_id
            where r.dag_id = 'sentencify_etl' and r.run_id = 'late_run'"""
        with psycopg2.connect(metadata_uri(s).replace("+psycopg2", "")) as meta:
            meta.autocommit = True
            rows: list = []
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                with meta.cursor() as cur:
                    cur.execute(query)
                    rows = cur.fetchall()
                if rows and all(missed and state in ("success", "failed") for missed, state, _ in rows):
                    break
                time.sleep(2)
            assert api.run("sentencify_etl", "late_run")["state"] == "running"
    finally:
        hold.set()
        thread.join(30)
    assert [(missed, state) for missed, state, _ in rows] == [(True, "success")], rows  # fired once, and it worked
    _wait_success(api, "sentencify_etl", run_id="late_run")
    with psycopg2.connect(metadata_uri(s).replace("+psycopg2", "")) as meta, meta.cursor() as cur:
        cur.execute(query)
        assert len(cur.fetchall()) == 1  # once: finishing late adds no second alert
    client.close()

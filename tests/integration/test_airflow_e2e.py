"""One chain run through the running scheduler: trigger the ETL over the REST API, the assets do the rest."""

from __future__ import annotations

import dataclasses
import time

import pytest

from sentencify import stack
from sentencify.airflow_api import AirflowApi
from sentencify.stack.airflow import ADMIN_USER, admin_password
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

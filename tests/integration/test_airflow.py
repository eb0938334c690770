"""The DAGs and operators in Airflow: parsed by the DagBag, and each run with `airflow dags test`."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

from sentencify import vectorstore
from sentencify.settings import PROJECT_ROOT
from sentencify.stack.airflow import airflow_bin, airflow_env, migrate
from sentencify.window import Triggered, Window, as_extra, step_runs, triggered_by, windows_for_run
from tests.chain_data import Logs, hour

DAG_IDS = ["sentencify_etl", "sentencify_profile", "sentencify_vectors", "sentencify_views"]


@pytest.fixture(scope="module")
def airflow_settings(stack_settings, tmp_path_factory):
    settings = dataclasses.replace(
        stack_settings, stack_dir=tmp_path_factory.mktemp("airflow-stack"), airflow_metadata_db="airflow_dagtest"
    )
    migrate(settings)
    return settings


def dags_test(
    settings, dag_id: str, logical_date: str, *conf: str, lineage_file=None, **extra_env
) -> subprocess.CompletedProcess:
    env = {**airflow_env(settings), **extra_env}
    if lineage_file is not None:  # apache-airflow-providers-openlineage's file transport
        env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps({"type": "file", "log_file_path": str(lineage_file), "append": True})
        env["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "sentencify-test"
    out = subprocess.run(
        [airflow_bin(), "dags", "test", dag_id, logical_date, *conf],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "state=success" in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
    return out


def test_the_dags_parse_and_chain_by_assets(airflow_settings, monkeypatch):
    for key, value in airflow_env(airflow_settings).items():
        monkeypatch.setenv(key, value)
    from airflow.dag_processing.dagbag import DagBag
    from airflow.timetables.interval import CronDataIntervalTimetable

    bag = DagBag(dag_folder=str(airflow_env(airflow_settings)["AIRFLOW__CORE__DAGS_FOLDER"]))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(
        [*DAG_IDS, "sentencify_verify", "sentencify_forget"]
    )  # the chain, the daily check, erasure
    verify_dag = bag.get_dag("sentencify_verify")
    assert verify_dag.doc_md and verify_dag.tasks[0].repair is True
    etl, profile, vectors, views = (bag.get_dag(d) for d in DAG_IDS)
    assert isinstance(etl.timetable, CronDataIntervalTimetable) and not etl.catchup
    etl_out = etl.tasks[0].outlets[0]
    assert list(profile.timetable.asset_condition.objects) == [etl_out]
    assert list(vectors.timetable.asset_condition.objects) == [profile.tasks[0].outlets[0]]
    assert list(views.timetable.asset_condition.objects) == [vectors.tasks[0].outlets[0]]
    alerts = {}
    for dag in (etl, profile, vectors, views):
        assert dag.doc_md and "sentencify" in dag.tags and dag.default_args["retries"] >= 1
        task = dag.tasks[0]
        assert set(task.template_fields) >= {"start", "end", "full"}
        assert set(dag.params) == {"start", "end", "full"}
        (alert,) = alerts[dag.dag_id] = dag.deadline  # Airflow keeps a list
        assert alert.callback.path == "sentencify_airflow.deadlines.deadline_missed"
        assert alert.callback.kwargs["step"] == task.step
    assert alerts["sentencify_etl"][0].reference.reference_name == "DagRunLogicalDateDeadline"
    assert alerts["sentencify_etl"][0].interval.total_seconds() == 3600 + airflow_settings.run_deadline_s
    assert alerts["sentencify_views"][0].reference.reference_name == "DagRunQueuedAtDeadline"


def test_a_missing_connection_fails_the_task_with_its_id(airflow_settings, settings, mongo):
    """Inside Airflow no store falls back to the environment: the task fails naming the connection."""
    env = airflow_env(dataclasses.replace(airflow_settings, mongo_db=settings.mongo_db))
    del env["AIRFLOW_CONN_REDIS_DEFAULT"]
    out = subprocess.run(
        [airflow_bin(), "tasks", "test", "sentencify_profile", "update_user_profiles", "2026-11-01T10:00:00+00:00"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    logs = out.stdout + out.stderr
    assert "MissingConnection" in logs and "new_state=up_for_retry" in logs, logs[-3000:]  # `tasks test` exits 0
    assert "Airflow connection 'redis_default' (Redis) is not defined" in logs, logs[-3000:]
    assert mongo.pipeline_runs.count_documents({}) == 0  # failed before any work


def test_the_dags_name_their_assets_from_the_connections(airflow_settings, monkeypatch):
    """Another database in the Mongo connection (not MONGO_DB) names other assets; a missing
    connection is an import error naming it, in the DAGs that need it only."""
    env = airflow_env(airflow_settings)
    env["AIRFLOW_CONN_MONGO_DEFAULT"] = env["AIRFLOW_CONN_MONGO_DEFAULT"].replace(
        f'"schema": "{airflow_settings.mongo_db}"', '"schema": "elsewhere"'
    )
    del env["AIRFLOW_CONN_QDRANT_DEFAULT"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AIRFLOW_CONN_QDRANT_DEFAULT", raising=False)
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.syspath_prepend(env["AIRFLOW__CORE__PLUGINS_FOLDER"])
    from sentencify_airflow import assets

    assets._asset.cache_clear()  # made once per process (the dag-processor parses each file in a new one)
    bag = DagBag(dag_folder=env["AIRFLOW__CORE__DAGS_FOLDER"])
    assets._asset.cache_clear()
    assert sorted(bag.import_errors) == sorted(f"{env['AIRFLOW__CORE__DAGS_FOLDER']}/{d}.py" for d in DAG_IDS[2:])
    assert all("'qdrant_default'" in e for e in bag.import_errors.values())
    assert bag.get_dag("sentencify_etl").tasks[0].outlets[0].uri.endswith("/elsewhere/training_examples")


def test_each_dag_runs_alone_with_airflow_dags_test(airflow_settings, settings, mongo, tmp_path):
    s = dataclasses.replace(airflow_settings, mongo_db=settings.mongo_db, qdrant_path=str(tmp_path / "qdrant"))
    logs = Logs(mongo)
    for i in range(3):
        logs.full_session(10, f"s{i}")
    logs.b(10, "s-orphan")

    events = tmp_path / "lineage.jsonl"
    dags_test(s, "sentencify_etl", "2026-11-01T10:00:00+00:00", lineage_file=events)
    assert mongo.training_examples.count_documents({"consistency_flag": "high"}) == 3
    assert mongo.etl_rejects.count_documents({"reason": "orphan"}) == 1
    assert mongo.pipeline_runs.find_one({"_id": "etl:2026-11-01T10:00:00+00:00"})

    dags_test(s, "sentencify_profile", "2026-11-01T10:00:00+00:00", lineage_file=events)
    assert mongo.user_profile.find_one({"_id": "u1"})["paraphrase_execution_count"] == 4

    dags_test(s, "sentencify_vectors", "2026-11-01T10:00:00+00:00", lineage_file=events)
    qc = vectorstore.client(s)
    try:
        assert vectorstore.count(qc, s.qdrant_collection, "real") == 3
    finally:
        qc.close()

    import psycopg2

    dags_test(s, "sentencify_views", "2026-11-01T10:00:00+00:00", lineage_file=events)
    with psycopg2.connect(s.analytics_db_uri) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from sentencify.fact_examples where example_id = any(%s)", (["s0", "s1", "s2"],))
        assert cur.fetchone() == (3,)
    assert_lineage(events, s)


def test_the_forget_dag_erases_the_users_of_its_conf(airflow_settings, settings, mongo, tmp_path):
    """`sentencify_forget` with conf {"user_ids": [...]} (pipeline.md "Personal data"): as `sentencify forget`."""
    s = dataclasses.replace(
        airflow_settings, mongo_db=settings.mongo_db, qdrant_path=str(tmp_path / "qdrant"), erasure_key="test-erasure-key"
    )
    logs = Logs(mongo)
    for i in range(2):
        logs.full_session(10, f"g{i}", a={"user_id": "gone"}, b={"user_id": "gone"}, c={"user_id": "gone"}, d={"user": "gone"})
    logs.full_session(10, "kept")
    dags_test(s, "sentencify_etl", "2026-11-01T10:00:00+00:00")
    assert mongo.training_examples.count_documents({}) == 3
    here = {"PYTHONPATH": str(PROJECT_ROOT)}  # this checkout's core package, also where another is installed
    dags_test(s, "sentencify_forget", "2026-11-01T10:00:00+00:00", "--conf", json.dumps({"user_ids": ["gone"]}), **here)
    (request,) = mongo.erasure_requests.find()
    assert request["status"] == "done" and request["removed"]["editor_recommend_options"] == 2
    assert mongo.editor_recommend_options.count_documents({"user_id": "gone"}) == 0
    assert [d["_id"] for d in mongo.training_examples.find()] == ["kept"]


def assert_lineage(events_file, s) -> None:
    """Each step's COMPLETE event names what it read and wrote, in the configured stores."""
    complete = {}
    for line in events_file.read_text().splitlines():
        event = json.loads(line)
        # dag.task; the profile DAG's second task (a Redis refusal's check) reads and writes nothing
        if (
            event.get("eventType") == "COMPLETE"
            and event["job"]["name"].count(".") == 1
            and "redis_accepted" not in event["job"]["name"]
        ):
            complete[event["job"]["name"].split(".")[0]] = event
    assert set(complete) >= set(DAG_IDS), sorted(complete)
    mongo_ns = f"mongodb://127.0.0.1:{s.mongo_port}"
    names = {
        dag: ({(d["namespace"], d["name"]) for d in e["inputs"]}, {(d["namespace"], d["name"]) for d in e["outputs"]})
        for dag, e in complete.items()
    }
    etl_in, etl_out = names["sentencify_etl"]
    assert (mongo_ns, f"{s.mongo_db}.editor_recommend_options") in etl_in
    assert etl_out == {(mongo_ns, f"{s.mongo_db}.training_examples"), (mongo_ns, f"{s.mongo_db}.etl_rejects")}
    _, profile_out = names["sentencify_profile"]
    assert (mongo_ns, f"{s.mongo_db}.user_profile") in profile_out
    assert (f"redis://127.0.0.1:{s.redis_port}", "0/user_profile:*") in profile_out
    vectors_in, vectors_out = names["sentencify_vectors"]
    assert vectors_in == {(mongo_ns, f"{s.mongo_db}.training_examples")}
    assert vectors_out == {(f"file://{s.qdrant_path}", s.qdrant_collection)}
    views_in, views_out = names["sentencify_views"]
    assert (mongo_ns, f"{s.mongo_db}.training_examples") in views_in
    assert (f"postgres://127.0.0.1:{s.postgres_port}", "analytics.sentencify.v_freshness") in views_out


def test_params_choose_another_window(airflow_settings, settings, mongo):
    s = dataclasses.replace(airflow_settings, mongo_db=settings.mongo_db)
    Logs(mongo).full_session(13, "s-late")
    dags_test(
        s,
        "sentencify_etl",
        "2026-11-01T10:00:00+00:00",
        "--conf",
        '{"start": "2026-11-01T13:00:00+00:00", "end": "2026-11-01T14:00:00+00:00"}',
    )
    assert mongo.training_examples.count_documents({}) == 1


def test_window_resolution_rules():
    logical = hour(5).start
    assert windows_for_run(start=None, end=None, event_windows=None, logical_date=logical) == [hour(5)]
    assert windows_for_run(start="2026-11-01T07:00", end="2026-11-01T09:00", event_windows=None, logical_date=logical) == [
        Window.parse("2026-11-01T07:00", "2026-11-01T09:00")
    ]
    events = [
        [hour(6).start.isoformat(), hour(6).end.isoformat()],
        [hour(4).start.isoformat(), hour(4).end.isoformat()],
        [hour(6).start.isoformat(), hour(6).end.isoformat()],
    ]
    assert windows_for_run(start=None, end=None, event_windows=events, logical_date=logical) == [hour(4), hour(6)]
    with pytest.raises(ValueError):
        Window.parse("2026-11-01T07:00", "2026-11-01T06:00")
    # a run with no logical date, no params and no windowed event covers no window (pipeline.md)
    assert windows_for_run(start=None, end=None, event_windows=[], logical_date=None) == []
    with pytest.raises(ValueError, match="without `start`"):
        windows_for_run(start=None, end="2026-11-01T09:00", event_windows=None, logical_date=logical)


def test_asset_events_ask_for_windows_no_window_or_a_full_rebuild():
    h4 = [hour(4).start.isoformat(), hour(4).end.isoformat()]
    assert triggered_by([]) == Triggered([], unwindowed=False, full=False)
    assert triggered_by([as_extra([hour(4)])]) == Triggered([h4], unwindowed=False, full=False)
    assert triggered_by([None]) == Triggered([], unwindowed=True, full=False)  # made by hand, no extra
    assert triggered_by([{}, as_extra([hour(4)])]) == Triggered([h4], unwindowed=True, full=False)
    assert triggered_by([as_extra([], unwindowed=True)]).unwindowed
    assert triggered_by([as_extra([], full=True)]).full
    assert step_runs([], unwindowed=False, full=False) == [None]
    assert step_runs([hour(4)], unwindowed=False, full=False) == [hour(4)]
    assert step_runs([hour(4)], unwindowed=True, full=False) == [hour(4), None]
    assert step_runs([hour(4)], unwindowed=False, full=True) == [None]

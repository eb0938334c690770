"""The dashboard: bundle checks, then the real thing (Superset 6.1 started here, deploy over
REST, every chart's data API against the views, a logged-in screenshot in headless chromium)."""

from __future__ import annotations

import dataclasses
import io
import math
import re
import uuid
import zipfile
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
import yaml

from sentencify import gaps, stack
from sentencify.dashboard import DASHBOARD_SLUG, dashboard_url
from sentencify.dashboard.bundle import TOP_FOLDER, BundleError, build, mask_password
from sentencify.simulate import generate
from sentencify.stack.process import free_port
from sentencify.stack.services import postgres_service
from sentencify.steps.runner import run_step
from sentencify.verify import verify
from sentencify.window import Window, floor_hour
from tests.helpers import ROOT, consume_until_idle, send, services_started

ARTIFACTS = ROOT / "artifacts"


# --- the bundle, no Superset needed ------------------------------------------------------------


def test_the_bundle_is_consistent_and_templated_from_settings(stack_settings):
    s = dataclasses.replace(
        stack_settings,
        analytics_reader_uri="postgresql://reader:s%40cret@db.internal:5432/analytics",
        airflow_url="https://airflow.example.org",
    )
    bundle = build(s)
    assert len(bundle.charts) == 18 and len(bundle.datasets) == 17
    assert bundle.dashboard["slug"] == DASHBOARD_SLUG
    (db,) = bundle.databases.values()
    # the password travels apart, never inside the bundle
    assert db["sqlalchemy_uri"] == "postgresql://reader:XXXXXXXXXX@db.internal:5432/analytics"
    assert bundle.passwords == {"sentencify_analytics": "s@cret"}
    markdown = [
        n["meta"]["code"] for n in bundle.dashboard["position"].values() if isinstance(n, dict) and n.get("type") == "MARKDOWN"
    ]
    assert "https://airflow.example.org" in markdown[0]
    # every chart on the grid once, by its fixed UUID
    placed = sorted(
        n["meta"]["uuid"] for n in bundle.dashboard["position"].values() if isinstance(n, dict) and n.get("type") == "CHART"
    )
    assert placed == sorted(c["uuid"] for c in bundle.charts.values())
    for kind, type_ in (("database", "Database"), ("dataset", "SqlaTable"), ("dashboard", "Dashboard")):
        with zipfile.ZipFile(io.BytesIO(bundle.zip_bytes(kind))) as zf:
            names = zf.namelist()
            assert {n.split("/")[0] for n in names} == {TOP_FOLDER}
            assert yaml.safe_load(zf.read(f"{TOP_FOLDER}/metadata.yaml"))["type"] == type_
    assert mask_password("postgresql://reader@h/db") == ("postgresql://reader@h/db", None)


def _grouping(params: dict) -> tuple[str, str]:
    if params.get("query_mode") == "raw":
        return ", ".join(params["all_columns"]), "-"
    grouped = [c for c in [params.get("x_axis"), *(params.get("groupby") or [])] if c]
    return ", ".join(grouped) or "-", ", ".join(params.get("metrics") or [params["metric"]])


def test_the_dashboard_spec_names_exactly_the_views_and_groupings_the_bundle_uses(stack_settings):
    bundle = build(stack_settings)
    view_of = {d["uuid"]: d["table_name"] for d in bundle.datasets.values()}
    charts = {
        Path(path).stem: (c["viz_type"], view_of[c["dataset_uuid"]], *_grouping(c["params"])) for path, c in bundle.charts.items()
    }
    text = (ROOT / "docs" / "dashboard_spec.md").read_text()
    table = text.split("| chart (file) |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    spec = {}
    for row in table:
        key, viz, view, grouped, metrics = (c.strip().strip("`") for c in row.strip().strip("|").split("|")[:5])
        spec[key] = (viz, view, grouped, metrics)
    assert spec == charts
    assert set(re.findall(r"`(v_[a-z_]+)`", text)) == {view for _, view, *_ in charts.values()}


def test_a_broken_template_names_its_file(stack_settings, tmp_path):
    import shutil

    from sentencify.dashboard.bundle import TEMPLATE_DIR

    shutil.copytree(TEMPLATE_DIR, tmp_path / "t")
    chart = tmp_path / "t" / "charts" / "funnel.yaml"
    chart.write_text(chart.read_text().replace("metric: sessions", "metric: no_such_metric"))
    with pytest.raises(BundleError, match=r"funnel.yaml: \['no_such_metric'\]"):
        build(stack_settings, tmp_path / "t")
    chart.write_text(chart.read_text().replace("no_such_metric", "sessions").replace("Correction funnel", "${NOPE}"))
    with pytest.raises(BundleError, match=r"funnel\.yaml: unknown"):
        build(stack_settings, tmp_path / "t")


def test_dataset_columns_match_the_views_in_postgresql(analytics_db, stack_settings):
    """The YAML lists each view's columns; a view changed in sql_views/ without its dataset fails here."""
    owner_uri, _ = analytics_db
    run_views_empty(stack_settings, owner_uri)
    with psycopg2.connect(owner_uri) as conn, conn.cursor() as cur:
        cur.execute(
            "select table_name, column_name, upper(data_type) from information_schema.columns "
            "where table_schema = 'sentencify' and table_name like 'v\\_%' order by table_name, ordinal_position"
        )
        actual: dict[str, list] = {}
        for table, column, type_ in cur.fetchall():
            actual.setdefault(table, []).append((column, type_))
    declared = {
        d["table_name"]: [(c["column_name"], c["type"]) for c in d["columns"]] for d in build(stack_settings).datasets.values()
    }
    assert declared == actual


# --- the real thing -----------------------------------------------------------------------------


@pytest.fixture
def analytics_db(stack_settings):
    pg = postgres_service(stack_settings)
    pg.provision()
    name = f"analytics_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    base = f"127.0.0.1:{stack_settings.postgres_port}/{name}"
    yield f"postgresql://sentencify@{base}", f"postgresql://sentencify_reader@{base}"
    pg.psql(f"drop database {name} with (force)")


def run_views_empty(settings, owner_uri):
    now = datetime.now(UTC)
    run_step(
        "views", Window.hour_containing(now), dataclasses.replace(settings, analytics_db_uri=owner_uri, mongo_db="empty_views")
    )


@pytest.fixture(scope="module")
def running_superset(stack_settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("superset")
    root.chmod(0o755)
    port = free_port()
    s = dataclasses.replace(
        stack_settings,
        stack_dir=root,
        superset_port=port,
        superset_url=f"http://127.0.0.1:{port}",
        superset_metadata_db=f"superset_{uuid.uuid4().hex[:6]}",
    )
    with services_started(s, stack.SUPERSET_SERVICES):
        yield s


def _ms(value):
    """Superset's JSON carries times as epoch milliseconds: compare in that unit."""
    if isinstance(value, datetime):
        return value.timestamp() * 1000
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000
    if isinstance(value, Decimal):
        return float(value)
    return value


def _same(got: list[tuple], want: list[tuple]) -> bool:
    """Equal row by row; numbers to within float noise (times carry microseconds as fractional ms)."""

    def eq(a, b):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
        return a == b

    return len(got) == len(want) and all(len(g) == len(w) and all(map(eq, g, w)) for g, w in zip(got, want, strict=False))


# chart (file name in superset/dashboard/charts) -> the same numbers asked of its view directly
EXPECTED_SQL = {
    "total_recommendations": "select event_hour, recommendations from sentencify.v_traffic_hourly",
    "micro_contexts": "select micro_contexts from sentencify.v_kpis",
    "user_coverage": "select user_coverage from sentencify.v_kpis",
    "golden_examples": "select sum(golden_examples) from sentencify.v_golden_data",
    "latency": "select event_hour, avg_latency_ms, p95_latency_ms from sentencify.v_latency_hourly",
    "golden_data": "select created_hour, golden_examples_total from sentencify.v_golden_data",
    "acceptance_rate": "select event_hour, acceptance_rate from sentencify.v_acceptance_hourly",
    "categories": "select category, sum(recommendations) from sentencify.v_category_distribution group by category",
    "funnel": "select step, sessions from sentencify.v_funnel",
    "quality": "select reason, consistency_flag, sum(examples) from sentencify.v_quality group by reason, consistency_flag",
    "dead_letters": "select day, topic, reason, dead_letters from sentencify.v_dead_letters_daily",
    "pipeline_state": "select step, last_window_start, last_window_end, finished_at from sentencify.v_pipeline_state",
    "consumer_lag": "select consumer_group, consumers, lag, reported_at from sentencify.v_consumer_lag",
    "freshness": "select stage_order, stage, status, newest, age_minutes, behind_raw_minutes from sentencify.v_freshness",
    "quarantine": "select step, reason, sessions, oldest, newest from sentencify.v_quarantine",
    "ingestion_gaps": "select day, topic, status, records_lost, gaps, ranges from sentencify.v_ingestion_gaps",
    "store_agreement": (
        "select store, step, status, missing, extra, different, checked_at, agreed_at from sentencify.v_store_agreement"
    ),
    "erasures": "select status, store, requests, removed, first_requested, last_finished from sentencify.v_erasures",
}


def _objects(api) -> dict[str, int]:
    counts = {}
    for kind in ("database", "dataset", "chart", "dashboard"):
        resp = api.get(api.join_urls(api.base_url, kind, "/"), params={"q": "(page_size:100)"})
        resp.raise_for_status()
        counts[kind] = resp.json()["count"]
    return counts


def test_an_offline_import_of_the_bundle_with_its_password_creates_the_database(running_superset, analytics_db, tmp_path):
    """`sentencify dashboard build --with-password` + `superset import-dashboards`: no REST API, password set.
    First in this module: an import creates the database only where Superset has none (it keeps one it has)."""
    import subprocess

    from sentencify.cli import main
    from sentencify.dashboard.deploy import client
    from sentencify.stack.superset import superset_bin, superset_env

    _, reader_uri = analytics_db
    with_password = reader_uri.replace("sentencify_reader@", "sentencify_reader:0ffl1ne@")
    out = tmp_path / "bundle.zip"
    env = {**running_superset.to_env(), "ANALYTICS_READER_URI": with_password}
    import os

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        assert main(["dashboard", "build", "--with-password", "--out", str(out)]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert out.stat().st_mode & 0o777 == 0o600
    imported = subprocess.run(
        [superset_bin(), "import-dashboards", "-p", str(out), "-u", running_superset.superset_username],
        env=superset_env(running_superset),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    api = client(running_superset)
    (database,) = api.get(api.join_urls(api.base_url, "database", "/")).json()["result"]
    stored = api.get(api.join_urls(api.base_url, "database", database["id"], "connection")).json()["result"]
    assert stored["sqlalchemy_uri"] == with_password.replace("0ffl1ne", "XXXXXXXXXX")  # a password is set


def test_deploy_then_every_chart_shows_the_views_numbers_and_the_dashboard_draws(
    running_superset, settings, mongo, redis, analytics_db, tmp_path
):
    from PIL import Image

    from sentencify.dashboard.deploy import client, deploy, superset_password
    from sentencify.dashboard.screenshot import screenshot

    owner_uri, reader_uri = analytics_db
    # With a password (the local PostgreSQL trusts 127.0.0.1, so any will do): it must travel apart and arrive.
    reader_with_password = reader_uri.replace("sentencify_reader@", "sentencify_reader:s3cret%21@")
    s = dataclasses.replace(
        settings,
        superset_port=running_superset.superset_port,
        superset_url=running_superset.superset_url,
        stack_dir=running_superset.stack_dir,
        analytics_db_uri=owner_uri,
        analytics_reader_uri=reader_with_password,
        qdrant_path=str(tmp_path / "qdrant"),
    )
    # A day of simulated traffic with anomalies, through Kafka, the consumer and the whole chain.
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    send(s, generate(300, seed=7, anomalies=0.2, start=start.replace(hour=0), hours=24, embedding_dim=s.embedding_dim))
    consume_until_idle(s)
    for n, reason in enumerate(["nul_in_text", "nul_in_text", "non_finite"]):  # as a step records one (interfaces: quarantine)
        mongo.pipeline_quarantine.insert_one(
            {
                "_id": f"views:q{n}",
                "step": "views",
                "session_id": f"q{n}",
                "reason": reason,
                "detail": "test",
                "first_seen": start,
                "last_seen": start,
                "attempts": 1,
            }
        )
    # A gap as the consumer records one (events.md: records that left Kafka before it read them).
    gaps.record(mongo, gaps.Gap(s.topic_prefix + "recommend_log", 0, 100, 129, gaps.DELETED, 30), start)
    # An erasure request as `sentencify forget` records one (a hash, times and counts: no personal data).
    mongo.erasure_requests.insert_one(
        {
            "_id": "0" * 64,
            "status": "done",
            "requested_at": start,
            "finished_at": start,
            "removed": {"editor_recommend_options": 3},
        }
    )
    # from the hour ingestion began to the end of this one: an hour boundary may pass meanwhile
    window = Window(start, floor_hour(datetime.now(UTC)) + timedelta(hours=1))
    for step in ("etl", "profile", "vectors"):
        run_step(step, window, s)
    verify(s, steps=("etl", "profile"))  # the store-agreement table's rows (pipeline.md, "Derived stores agree")
    run_step("views", window, s)

    # First deploy points the database somewhere else; the re-deploy must overwrite it, not add.
    deploy(dataclasses.replace(s, analytics_reader_uri=reader_uri.rsplit("/", 1)[0] + "/postgres"), echo=print)
    api = client(s)
    before = _objects(api)
    deployed = deploy(s, echo=print)
    assert _objects(api) == before == {"database": 1, "dataset": 17, "chart": 18, "dashboard": 1}
    assert deployed.url == dashboard_url(s)
    databases = api.get(api.join_urls(api.base_url, "database", "/")).json()["result"]
    (database,) = databases
    stored = api.get(api.join_urls(api.base_url, "database", database["id"], "connection")).json()["result"]
    assert stored["sqlalchemy_uri"] == reader_with_password.replace("s3cret%21", "XXXXXXXXXX")  # set, and masked on read

    # the Public role is empty: without a login there is nothing to see
    import requests

    anonymous = requests.get(api.join_urls(api.base_url, "dashboard", DASHBOARD_SLUG), timeout=30)
    assert anonymous.status_code == 401, anonymous.status_code

    charts = api.get(api.join_urls(api.base_url, "dashboard", DASHBOARD_SLUG, "charts")).json()["result"]
    key_by_name = {c["slice_name"]: Path(p).stem for p, c in build(s).charts.items()}
    chart_params = {Path(p).stem: c["params"] for p, c in build(s).charts.items()}
    assert sorted(key_by_name[c["slice_name"]] for c in charts) == sorted(EXPECTED_SQL)
    with psycopg2.connect(reader_uri) as conn, conn.cursor() as cur:  # as Superset reads: the read-only role
        for chart in charts:
            key = key_by_name[chart["slice_name"]]
            resp = api.get(api.join_urls(api.base_url, "chart", chart["id"], "data/"), params={"force": "true"})
            assert resp.status_code == 200, f"{key}: {resp.status_code} {resp.text[:300]}"
            (result,) = resp.json()["result"]
            got = sorted(tuple(_ms(v) for v in row.values()) for row in result["data"])
            cur.execute(EXPECTED_SQL[key])
            want = sorted(tuple(_ms(v) for v in row) for row in cur.fetchall())
            assert got, f"{key}: the chart has no data"
            if key == "freshness":  # ages are computed against now(): a minute may turn between the two queries
                assert all(abs(g[4] - w[4]) <= 1 for g, w in zip(got, want, strict=True)), (got, want)
                got, want = [g[:4] + g[5:] for g in got], [w[:4] + w[5:] for w in want]
            assert _same(got, want), f"{key}: chart {got[:5]} != view {want[:5]}"
            if key == "funnel":  # stage order, each a subset of the one before, labelled with count and share kept
                cur.execute("select sessions from sentencify.v_funnel order by step_order")
                stages = [n for (n,) in cur.fetchall()]
                assert stages[0] > 0 and stages == sorted(stages, reverse=True), stages
                assert sorted(n for _, n in got) == sorted(stages)
                form = chart_params[key]
                assert (form["label_type"], form["percent_calculation_type"]) == (5, "prev_step")
                assert stages[0] == len(mongo.editor_recommend_options.distinct("recommend_session_id"))
            if key == "quarantine":
                assert sorted(got)[0][:3] == ("views", "non_finite", 1) and sorted(got)[1][:3] == ("views", "nul_in_text", 2)

    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "dashboard.png"
    shot = screenshot(s.superset_url, s.superset_username, superset_password(s), out)
    from tests.conftest import ARTIFACTS_WRITTEN

    ARTIFACTS_WRITTEN.append(f"dashboard screenshot: {out}")
    assert (shot.charts, shot.drawn, shot.empty, shot.errors) == (18, 18, [], [])
    image = Image.open(out).convert("RGB")
    assert image.width >= 1600 and image.height >= 1500, image.size
    small = image.resize((200, 200 * image.height // image.width))
    raw = small.tobytes()
    pixels = [raw[i : i + 3] for i in range(0, len(raw), 3)]
    non_white = sum(1 for p in pixels if min(p) < 235) / len(pixels)
    assert non_white > 0.05, f"the screenshot is almost blank ({non_white:.1%} drawn)"
    assert len(set(pixels)) > 200, "the screenshot has too few colours to hold charts"


def test_deploy_errors_say_what_to_check(running_superset):
    from sentencify.dashboard.deploy import DeployError, deploy

    with pytest.raises(DeployError, match="SUPERSET_USERNAME / SUPERSET_PASSWORD"):
        deploy(dataclasses.replace(running_superset, superset_password="wrong"), echo=print)
    with pytest.raises(DeployError, match=r"not reachable at http://127\.0\.0\.1:1: is it up"):
        deploy(dataclasses.replace(running_superset, superset_url="http://127.0.0.1:1"), echo=print)

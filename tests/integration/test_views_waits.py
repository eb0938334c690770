"""No unbounded wait in the views step (pipeline.md "Bounds at any size"; issue 30).

A dashboard reader (`sentencify_reader`) keeps a transaction open on a view. A views run that has
no schema change to make takes no lock the reader holds up, and finishes; one that has (the
sql_views files changed) fails within VIEWS_LOCK_TIMEOUT_S with one line naming the lock and the
reader's session; the reader is unharmed, a new reader's query is not held up past the bound, and
once the reader commits the next run applies the change. Through `sentencify run views` (psycopg2)
in its own process, as an operator runs it.
"""

from __future__ import annotations

import os
import threading
import time

import psycopg2
import pytest

from sentencify.steps.runner import run_step
from tests.chain_data import Logs, hour
from tests.helpers import run_cli
from tests.integration.test_views import analytics  # noqa: F401 (fixture)

BOUND_S = 2.0
WINDOW = [
    "--start",
    hour(10).start.isoformat(),
    "--end",
    hour(10).end.isoformat(),
]


@pytest.fixture
def views_env(settings, analytics):  # noqa: F811
    conn, reader_uri = analytics
    db_name = conn.get_dsn_parameters()["dbname"]
    env = {
        **os.environ,
        **settings.to_env(),
        "ANALYTICS_DB_URI": f"postgresql://sentencify@127.0.0.1:{settings.postgres_port}/{db_name}",
        "VIEWS_LOCK_TIMEOUT_S": str(BOUND_S),
        "PYTHONPATH": os.getcwd(),
    }
    return env, conn, reader_uri


def _reader(uri: str):
    conn = psycopg2.connect(uri, application_name="analyst-notebook")
    return conn


def _query_time(uri: str, sql: str) -> float:
    started = time.monotonic()
    conn = psycopg2.connect(uri)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            cur.fetchall()
    finally:
        conn.close()
    return time.monotonic() - started


def test_a_readers_open_transaction_fails_the_views_run_within_the_bound_and_the_next_run_completes(settings, mongo, views_env):
    env, owner, reader_uri = views_env
    Logs(mongo).full_session(10, "s1")
    run_step("etl", hour(10), settings)
    first = run_cli("run", "views", *WINDOW, env=env)
    assert first.returncode == 0, first.stderr
    assert '"sql": ["000_facts.sql"' in first.stdout  # the first run creates the schema

    reader = _reader(reader_uri)
    cur = reader.cursor()
    cur.execute("select count(*) from sentencify.v_quality")  # psycopg2 opened a transaction: it stays open
    assert cur.fetchone() == (1,)

    # Nothing to change in the schema: no lock the reader holds up; the run completes.
    started = time.monotonic()
    unchanged = run_cli("run", "views", *WINDOW, env=env, timeout=60)
    assert unchanged.returncode == 0, unchanged.stderr
    assert '"sql": []' in unchanged.stdout

    # The sql_views files changed (a release): the schema must change, and the reader holds it up.
    with owner, owner.cursor() as c:
        c.execute("update sentencify.sql_views_applied set checksum = 'the previous release'")
    waited: dict[str, float] = {}

    def new_reader() -> None:
        time.sleep(0.5)  # while the step waits for its lock
        waited["s"] = _query_time(reader_uri, "select count(*) from sentencify.v_golden_data")

    other = threading.Thread(target=new_reader)
    other.start()
    started = time.monotonic()
    blocked = run_cli("run", "views", *WINDOW, env=env, timeout=60)
    took = time.monotonic() - started
    other.join(30)
    assert blocked.returncode == 2
    message = blocked.stderr.strip().splitlines()[-1]
    assert "VIEWS_LOCK_TIMEOUT_S" in message and "analyst-notebook" in message and "sentencify_reader" in message, message
    assert "pid " in message and "idle in transaction" in message, message
    assert took < BOUND_S + 30  # the bound, plus a process's start and the runs' other work on a busy machine
    # A reader that came while the step waited was held up at most as long as the bound.
    assert waited["s"] < BOUND_S + 2

    # The reader is unharmed: its transaction goes on, and commits.
    cur.execute("select count(*) from sentencify.v_quality")
    assert cur.fetchone() == (1,)
    reader.commit()
    reader.close()
    assert _query_time(reader_uri, "select count(*) from sentencify.v_golden_data") < 2

    # The next run applies the change.
    after = run_cli("run", "views", *WINDOW, env=env, timeout=60)
    assert after.returncode == 0, after.stderr
    assert '"sql": ["000_facts.sql"' in after.stdout


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_both_drivers_transactions_get_the_timeouts_and_a_lock_wait_names_its_holder(views_env, driver):
    """psycopg2 (`with conn:`, the CLI) and psycopg 3 (`with conn.transaction():`, Airflow's
    PostgresHook), through the fence's wrapper as the runner hands them to the step."""
    import importlib

    from sentencify.steps.fence import NO_FENCE, FencedPostgres
    from sentencify.steps.pg_waits import BoundedPostgres, LockWaitTimeout, Waits
    from sentencify.steps.views import transaction

    env, owner, reader_uri = views_env
    with owner, owner.cursor() as c:
        c.execute("create schema if not exists sentencify; create table if not exists sentencify.t (x int)")
        c.execute("grant usage on schema sentencify to sentencify_reader; grant select on sentencify.t to sentencify_reader")
    raw = importlib.import_module(driver).connect(env["ANALYTICS_DB_URI"])
    conn = FencedPostgres(BoundedPostgres(raw, Waits(0.5, 5)), NO_FENCE)
    try:
        with transaction(conn), conn.cursor() as cur:
            cur.execute("show lock_timeout")
            assert cur.fetchone()[0] == "500ms"
            cur.execute("show statement_timeout")
            assert cur.fetchone()[0] == "5s"
        reader = _reader(reader_uri)
        reader.cursor().execute("select count(*) from sentencify.t")  # holds ACCESS SHARE
        started = time.monotonic()
        expected = r"AccessShareLock on sentencify\.t held by pid .* analyst-notebook"
        with pytest.raises(LockWaitTimeout, match=expected), transaction(conn), conn.cursor() as cur:
            cur.execute("lock table sentencify.t in access exclusive mode")
        assert time.monotonic() - started < 5
        reader.rollback()
        reader.close()
        with transaction(conn), conn.cursor() as cur:  # the connection is usable; the bound ended with the transaction
            cur.execute("lock table sentencify.t in access exclusive mode")
        with raw.cursor() as cur:
            cur.execute("show lock_timeout")
            assert cur.fetchone()[0] == "0"
        raw.rollback()
    finally:
        raw.close()

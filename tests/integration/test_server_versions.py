"""The server versions the chain needs, read from the test stack's real servers (sentencify.stores.versions)."""

from __future__ import annotations

import psycopg
import psycopg2
import pytest

from sentencify.cli import explain
from sentencify.steps.runner import run_step
from sentencify.stores import versions
from tests.chain_data import hour


@pytest.fixture
def fresh_checks(monkeypatch):
    monkeypatch.setattr(versions, "_checked", {})
    return versions._checked


def test_every_servers_version_is_read_and_meets_the_minimum(settings, mongo, redis, fresh_checks):
    versions.check_mongodb(mongo)
    versions.check_redis(redis)
    assert fresh_checks["MongoDB"] >= (5, 2) and fresh_checks["Redis"] >= (4, 0)
    uri = f"postgresql://sentencify@127.0.0.1:{settings.postgres_port}/postgres"
    for connect in (psycopg2.connect, psycopg.connect):  # the CLI's driver and Airflow's
        with connect(uri) as conn:
            versions.check_postgres(conn)


def test_a_server_below_the_minimum_stops_the_run_at_start_with_one_line(settings, mongo, fresh_checks, monkeypatch):
    monkeypatch.setitem(versions.MINIMUM, "MongoDB", ((99, 0), "the ETL's join uses $top"))
    with pytest.raises(versions.UnsupportedServer) as raised:
        run_step("etl", hour(10), settings)
    line = explain(raised.value, settings)
    assert line.startswith("MongoDB 8.") and "needs MongoDB 99.0 or later" in line and "\n" not in line
    assert mongo.pipeline_leases.count_documents({}) == 0  # before the lease: nothing started

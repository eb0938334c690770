"""The local stack manager and the command line, as a user runs them."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

from sentencify import stack
from sentencify.settings import Settings
from sentencify.stack.process import is_running, read_pid, spawn, stop_pid
from tests.helpers import ROOT, run_cli


def test_status_reports_every_service_healthy_and_up_is_idempotent(stack_settings):
    rows = stack.status(stack_settings, only=stack.CORE_SERVICES)
    assert [r.name for r in rows] == ["kafka-storage", "kafka", "mongodb", "redis", "postgres"]
    assert all(r.healthy and r.pid for r in rows), rows
    pids = [r.pid for r in rows]
    lines: list[str] = []
    stack.up(stack_settings, only=stack.CORE_SERVICES, echo=lines.append)
    assert [r.pid for r in stack.status(stack_settings, only=stack.CORE_SERVICES)] == pids
    assert all("already up" in line for line in lines if "topics" not in line)


def test_down_stops_only_what_the_stack_started(tmp_path):
    settings = dataclasses.replace(Settings.from_env({}), stack_dir=tmp_path)
    stranger = spawn(["sleep", "60"], pid_file=tmp_path / "run" / "kafka.pid", log_file=tmp_path / "sleep.log")
    try:
        lines: list[str] = []
        stack.down(settings, only=["kafka"], echo=lines.append)
        assert is_running(stranger), "a process that is not our broker must survive `down`"
        assert "not running" in lines[0]
        assert read_pid(tmp_path / "run" / "kafka.pid") is None
    finally:
        stop_pid(stranger)


def cli(settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_cli(*args, env={**os.environ, **settings.to_env(), "METRICS_PORT": "-1"}, timeout=timeout)


def test_cli_simulate_then_consume_until_idle(settings, mongo):
    sim = cli(settings, "simulate", "--sessions", "60", "--seed", "4", "--anomalies", "0.3", timeout=120)
    assert sim.returncode == 0, sim.stderr
    assert "simulate: " in sim.stderr  # the progress bar's closing line
    expected = {}
    for line in sim.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "distinct":
            expected[parts[0]] = int(parts[1])
    assert len(expected) == 7

    con = cli(settings, "consume", "--until-idle", "2", timeout=180)
    assert con.returncode == 0, con.stderr[-2000:]
    got = {c: mongo[c].count_documents({}) for c in expected}
    assert got == expected


def test_cli_rejects_bad_settings_with_the_variable_name():
    env = {**os.environ, "BATCH_SIZE": "zero"}
    out = subprocess.run(
        [sys.executable, "-m", "sentencify.cli", "stack", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "BATCH_SIZE must be an integer" in out.stderr


def test_stack_status_json_and_logs(stack_settings):
    import json

    out = cli(stack_settings, "stack", "status", "kafka", "mongodb", "redis", "postgres", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert [s["name"] for s in status["services"]] == ["kafka", "mongodb", "redis", "postgres"]
    assert all(s["healthy"] and s["pid"] for s in status["services"])
    assert status["settings"]["MONGO_DB"] == stack_settings.mongo_db
    logs = cli(stack_settings, "stack", "logs", "postgres", "-n", "5")
    assert logs.returncode == 0 and 0 < len(logs.stdout.splitlines()) <= 5, logs.stderr
    bad = cli(stack_settings, "stack", "logs", "nosuch")
    assert bad.returncode == 2 and "name one service" in bad.stderr
    log_file = next(r.log_file for r in stack.status(stack_settings, only=["postgres"]))
    follow = subprocess.Popen(
        [sys.executable, "-m", "sentencify.cli", "stack", "logs", "postgres", "-f", "-n", "0"],
        cwd=ROOT,
        env={**os.environ, **stack_settings.to_env()},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)  # it has printed the last 0 lines and follows
        with open(log_file, "a") as f:
            f.write("a line written while following\n")
        assert follow.stdout.readline() == "a line written while following\n"
        assert follow.poll() is None
    finally:
        follow.terminate()
        follow.wait(10)


def test_summary_json(settings, mongo):
    import json

    mongo.recommend_log.insert_one({"_id": "i1"})
    out = cli(settings, "summary", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["records per collection"]["I recommend_log"] == 1


def test_kafka_keeps_records_and_committed_offsets_across_a_restart_and_a_crash(settings, mongo, tmp_path):
    """issue 22: the local broker's storage is durable (STACK_DIR/kafka), so a restart loses nothing."""
    import signal

    from sentencify.simulate import generate
    from sentencify.stack.process import free_port
    from sentencify.stack.topics import create_topics
    from tests.helpers import assert_manifest_stored, committed_offsets, consume_until_idle, send, services_started

    port = free_port()
    own = dataclasses.replace(
        settings,
        stack_dir=tmp_path,
        kafka_port=port,
        kafka_storage_port=free_port(),
        kafka_bootstrap_servers=f"127.0.0.1:{port}",
    )
    with services_started(own, ["kafka"]):
        create_topics(own)
        first = send(own, generate(150, seed=21, embedding_dim=own.embedding_dim))
        consume_until_idle(own)
        assert_manifest_stored(mongo, first)
        offsets = committed_offsets(own)
        assert sum(offsets.values()) == first.records
        second = send(own, generate(150, seed=22, embedding_dim=own.embedding_dim))

        stack.down(own, only=["kafka"], echo=print)  # `stack down` + `stack up`
        stack.up(own, only=["kafka"], echo=print)
        assert committed_offsets(own) == offsets
        broker = read_pid(tmp_path / "run" / "kafka.pid")
        assert broker and stop_pid(broker, sig=signal.SIGKILL)  # a crash of the broker
        stack.up(own, only=["kafka"], echo=print)
        assert committed_offsets(own) == offsets

        consume_until_idle(own)
        for collection, ids in second.expected_ids.items():
            first.expected_ids.setdefault(collection, set()).update(ids)
        assert_manifest_stored(mongo, first)
        assert sum(committed_offsets(own).values()) == first.records + second.records

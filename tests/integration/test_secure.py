"""The secured stack (`sentencify stack up --secure`, issue 20): every connection over TLS with a login.

One secured stack for the whole module (session-scoped fixture): it starts in 7-14 s; the module
runs in 70-120 s on a shared 2-core machine (load 6-13), a third of it the end-to-end test
(30 sessions).
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import psycopg2
import pytest
import redis as redis_lib
from kafka import KafkaProducer
from pymongo import MongoClient

from consumer.dead_letter import DEAD_LETTERS
from sentencify import stack
from sentencify.cli import explain
from sentencify.dashboard.bundle import build, unmask_password
from sentencify.kafka_config import kafka_security
from sentencify.settings import Settings
from sentencify.stack.airflow import connections as airflow_connections
from sentencify.stack.certs import make_ca
from sentencify.stack.process import free_port, port_open, spawn, stop_pid, wait_until
from sentencify.stack.secure import secure_settings
from sentencify.stack.service import tansu_binary
from sentencify.stack.topics import create_topics
from sentencify.steps.runner import STEPS
from tests.helpers import ROOT, run_cli


@pytest.fixture(scope="session")
def secure(request) -> Iterator[Settings]:
    root = Path(tempfile.mkdtemp(prefix="sentencify-secure-stack-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user and must reach its directory
    settings = secure_settings(root / "stack-secure", private=True)  # where `--secure` puts STACK_DIR=root/stack
    try:
        stack.up(settings, echo=print)
        yield settings
    finally:
        stack.down(settings, echo=print)
        if not request.session.testsfailed:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def wrong_ca(tmp_path) -> str:
    return str(make_ca(tmp_path / "other-ca", "Not the stack's CA")[0])


def _one_line(exc: BaseException, settings: Settings, *words: str) -> str:
    line = explain(exc, settings)
    assert "\n" not in line and all(w in line for w in words), line
    assert "***" in line or "KAFKA" in line  # the password is never shown
    return line


def _swap(uri: str, old: str, new: str) -> str:
    assert old in uri
    return uri.replace(old, new)


def test_plaintext_ports_are_closed(secure):
    with pytest.raises(Exception):  # noqa: B017 (any refusal: TLS is the only way in)
        MongoClient(f"mongodb://127.0.0.1:{secure.mongo_port}", serverSelectionTimeoutMS=1500).admin.command("ping")
    with pytest.raises(redis_lib.ConnectionError):
        redis_lib.Redis(host="127.0.0.1", port=secure.redis_port, socket_timeout=2).ping()
    with pytest.raises(psycopg2.OperationalError, match=r"no encryption|SSL off"):
        psycopg2.connect(_swap(secure.analytics_db_uri, "sslmode=verify-full", "sslmode=disable"), connect_timeout=3)
    with socket.create_connection(("127.0.0.1", secure.kafka_port), timeout=3) as raw:  # Kafka's ApiVersions in clear
        raw.sendall(bytes.fromhex("0000001500120000000000010007") + b"sentencify" + b"\x00" * 1)
        raw.settimeout(3)
        try:
            answer = raw.recv(64)
        except ConnectionResetError:
            answer = b""
        assert answer[:1] in (b"", b"\x15")  # closed, reset or a TLS alert: never a Kafka answer


def test_tls_with_login_reaches_every_service(secure):
    with MongoClient(secure.mongo_uri, serverSelectionTimeoutMS=3000) as client:
        assert client.admin.command("ping")["ok"] == 1
    assert redis_lib.Redis.from_url(secure.redis_url).ping()
    with psycopg2.connect(secure.analytics_db_uri) as conn, conn.cursor() as cur:
        cur.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        assert cur.fetchone() == (True,)
    producer = KafkaProducer(bootstrap_servers=secure.kafka_bootstrap_servers, **kafka_security(secure))
    producer.send(secure.topic_prefix + "interaction_logs", b"{}").get(timeout=30)
    producer.close()


def test_kafka_tls_sends_nothing_after_the_handshake(secure):
    """TLS 1.3 session tickets arrive after the handshake; kafka-python closes a connection that turns
    readable before its first request, so the terminator must send none (the admin client's second
    connection died that way: "Connection to 111 failed")."""
    ctx = ssl.create_default_context(cafile=secure.kafka_ssl_cafile)
    ctx.load_cert_chain(secure.kafka_ssl_certfile, secure.kafka_ssl_keyfile)
    for _ in range(2):
        with (
            socket.create_connection(("127.0.0.1", secure.kafka_port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            readable, _, _ = select.select([tls], [], [], 1.0)
            assert not readable, "the broker's TLS terminator sent something before any request"


def test_wrong_ca_is_refused_with_one_line_per_service(secure, wrong_ca):
    ca = quote(str(secure.kafka_ssl_cafile), safe="/")
    bad = dataclasses.replace(
        secure,
        mongo_uri=_swap(secure.mongo_uri, ca, wrong_ca),
        redis_url=_swap(secure.redis_url, ca, wrong_ca),
        analytics_db_uri=_swap(secure.analytics_db_uri, ca, wrong_ca),
        kafka_ssl_cafile=wrong_ca,
    )
    with pytest.raises(Exception) as mongo_err:
        MongoClient(bad.mongo_uri, serverSelectionTimeoutMS=1500).admin.command("ping")
    _one_line(mongo_err.value, bad, "MongoDB", "tlsCAFile", "MONGO_URI")
    with pytest.raises(redis_lib.ConnectionError) as redis_err:
        redis_lib.Redis.from_url(bad.redis_url).ping()
    _one_line(redis_err.value, bad, "Redis", "ssl_ca_certs", "REDIS_URL")
    with pytest.raises(psycopg2.OperationalError) as pg_err:
        psycopg2.connect(bad.analytics_db_uri, connect_timeout=3)
    _one_line(pg_err.value, bad, "PostgreSQL", "sslrootcert", "ANALYTICS_DB_URI")
    with pytest.raises(Exception) as kafka_err:
        KafkaProducer(bootstrap_servers=bad.kafka_bootstrap_servers, request_timeout_ms=3000, **kafka_security(bad))
    _one_line(kafka_err.value, bad, "Kafka", "KAFKA_SSL_CAFILE")


def test_wrong_password_is_refused_with_one_line_per_service(secure, tmp_path):
    bad = dataclasses.replace(
        secure,
        mongo_uri=_swap(secure.mongo_uri, "sentencify:", "sentencify:wrong"),
        redis_url=_swap(secure.redis_url, "rediss://:", "rediss://:wrong"),
        analytics_db_uri=_swap(secure.analytics_db_uri, "sentencify:", "sentencify:wrong"),
    )
    with pytest.raises(Exception) as mongo_err:
        MongoClient(bad.mongo_uri, serverSelectionTimeoutMS=3000).admin.command("ping")
    _one_line(mongo_err.value, bad, "MongoDB", "password", "MONGO_URI")
    with pytest.raises(redis_lib.AuthenticationError) as redis_err:
        redis_lib.Redis.from_url(bad.redis_url).ping()
    _one_line(redis_err.value, bad, "Redis", "password", "REDIS_URL")
    with pytest.raises(psycopg2.OperationalError) as pg_err:
        psycopg2.connect(bad.analytics_db_uri, connect_timeout=3)
    _one_line(pg_err.value, bad, "PostgreSQL", "password", "ANALYTICS_DB_URI")
    # Kafka's login is the client certificate: one the stack's CA did not sign is refused.
    other = make_ca(tmp_path / "client-ca", "Stranger")
    no_login = dataclasses.replace(secure, kafka_ssl_certfile=str(other[0]), kafka_ssl_keyfile=str(other[1]))
    with pytest.raises(Exception) as kafka_err:
        producer = KafkaProducer(
            bootstrap_servers=no_login.kafka_bootstrap_servers, request_timeout_ms=3000, **kafka_security(no_login)
        )
        producer.send(no_login.topic_prefix + "interaction_logs", b"{}").get(timeout=10)
    _one_line(kafka_err.value, no_login, "Kafka", "KAFKA_SSL_CERTFILE")


def _secure_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """A child's environment as a user makes it: `source secure.env` (nothing else of ours inherited)."""
    ours = set(Settings.variables())
    env = {k: v for k, v in os.environ.items() if k not in ours}
    for line in (settings.stack_dir / "secure.env").read_text().splitlines():
        name, _, value = line.partition("=")
        env[name] = shlex.split(value)[0]
    return {**env, "METRICS_PORT": "-1", **overrides}


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    out = run_cli(*args, env=env, timeout=timeout)
    assert out.returncode == 0, f"sentencify {' '.join(args)}: {out.stderr[-3000:]}"
    return out.stdout


def test_end_to_end_over_tls_with_logins(secure, tmp_path):
    """simulate -> consume -> etl -> profile -> vectors -> views -> the dashboard's data as Superset reads
    it, each a separate `sentencify` process configured by secure.env alone (issue 20)."""
    tag = uuid.uuid4().hex[:6]
    env = _secure_env(secure, TOPIC_PREFIX=f"e2e{tag}.", MONGO_DB=f"e2e_{tag}", CONSUMER_GROUP=f"e2e-{tag}")
    env["QDRANT_PATH"] = str(tmp_path / "qdrant")
    settings = Settings.from_env(env)
    create_topics(settings)

    sim = _cli(env, "simulate", "--sessions", "30", "--seed", "11", "--anomalies", "0.1")
    expected = {p[0]: int(p[1]) for p in (line.split() for line in sim.splitlines()) if len(p) >= 3 and p[2] == "distinct"}
    _cli(env, "consume", "--until-idle", "3", timeout=180)
    with MongoClient(settings.mongo_uri, tz_aware=True) as client:
        stored = {c: client[settings.mongo_db][c].count_documents({}) for c in expected}
    assert stored == expected and sum(stored.values()) > 0

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    window = ["--start", (hour - timedelta(hours=2)).isoformat(), "--end", (hour + timedelta(hours=2)).isoformat()]
    summaries = {step: json.loads(_cli(env, "run", step, *window).splitlines()[-1]) for step in STEPS}
    assert set(summaries) == {"etl", "profile", "vectors", "views"}

    # The profiles went to Redis over TLS with its password, the vectors to Qdrant.
    assert summaries["profile"]["users"] > 0 and summaries["vectors"]["upserted"] == summaries["etl"]["written"] > 0
    cached = redis_lib.Redis.from_url(secure.redis_url).keys("user_profile:*")
    assert len(cached) >= summaries["profile"]["users"]

    # The dashboard's database, as `dashboard deploy` hands it to Superset: TLS with the host checked.
    bundle = build(settings)
    ((db_file, db),) = bundle.databases.items()
    query = parse_qs(urlsplit(db["sqlalchemy_uri"]).query)
    assert query["sslmode"] == ["verify-full"] and Path(query["sslrootcert"][0]) == Path(secure.kafka_ssl_cafile)
    uri = unmask_password(db["sqlalchemy_uri"], bundle.passwords[Path(db_file).stem])
    views = sorted({f"{d.get('schema') or 'sentencify'}.{d['table_name']}" for d in bundle.datasets.values()})
    probe = (
        "import json, sys; from sqlalchemy import create_engine, text\n"
        "engine = create_engine(sys.argv[1])\n"
        "with engine.connect() as c:\n"
        "    ssl = c.execute(text('select ssl from pg_stat_ssl where pid = pg_backend_pid()')).scalar()\n"
        "    rows = {v: c.execute(text(f'select count(*) from {v}')).scalar() for v in sys.argv[2:]}\n"
        "    kpis = dict(c.execute(text('select * from sentencify.v_kpis')).mappings().one())\n"
        "print(json.dumps({'ssl': ssl, 'rows': rows, 'kpis': kpis}, default=str))\n"
    )
    superset_python = ROOT / ".venv-superset" / "bin" / "python"
    read = subprocess.run(
        [str(superset_python), "-c", probe, uri, *views], capture_output=True, text=True, timeout=60, check=False
    )
    assert read.returncode == 0, read.stderr[-2000:]
    seen = json.loads(read.stdout)
    assert seen["ssl"] is True
    assert int(seen["kpis"]["total_recommendations"]) == stored["editor_recommend_options"] > 0
    assert seen["kpis"]["users_with_profile"] == seen["kpis"]["users_with_recommendations"] > 0
    assert seen["rows"]["sentencify.v_traffic_hourly"] > 0

    # The operators' commands: what is stored (MongoDB, Redis, PostgreSQL), and a replay through Kafka.
    summary = json.loads(_cli(env, "summary", "--json"))
    assert json.dumps(summary).count("***") == 0 and summary
    replay = _cli(env, "replay-dead-letters")
    with MongoClient(settings.mongo_uri) as client:
        letters = client[settings.mongo_db][DEAD_LETTERS].count_documents({})
    assert letters > 0 and f"replayed {letters} dead letters" in replay, replay


def test_airflow_hooks_reach_the_secured_stores(secure, tmp_path):
    """The chain's operators get their clients from provider hooks: the connections the local stack
    gives Airflow carry TLS (certificate and host name checked) and the login to each store."""
    probe = (
        "from airflow.providers.mongo.hooks.mongo import MongoHook\n"
        "from airflow.providers.postgres.hooks.postgres import PostgresHook\n"
        "from airflow.providers.redis.hooks.redis import RedisHook\n"
        "mongo = MongoHook(mongo_conn_id='mongo_default').get_conn().admin.command('ping')['ok']\n"
        "redis = RedisHook(redis_conn_id='redis_default').get_conn().ping()\n"
        "sql = 'select ssl from pg_stat_ssl where pid = pg_backend_pid()'\n"
        "pg = PostgresHook(postgres_conn_id='sentencify_analytics').get_first(sql)[0]\n"
        "print('hooks:', mongo, redis, pg)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path), **airflow_connections(secure))
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "hooks: 1.0 True True" in out.stdout.splitlines(), out.stdout[-3000:]


def test_cli_stack_secure_reports_health_and_never_a_password(secure):
    """`stack up --secure` again is a no-op, `stack status --secure` sees every service healthy; the
    settings printed mask every password (they are in secure.env, mode 600)."""
    env = {**_secure_env(secure), "STACK_DIR": str(secure.stack_dir.parent / "stack")}
    up = _cli(env, "stack", "up", "--secure")
    assert up.count("already up") == 6, up
    status = _cli(env, "stack", "status", "--secure")
    assert status.count("healthy") == 6 and "KAFKA_SECURITY_PROTOCOL=SSL" in status, status
    as_json = json.loads(_cli(env, "stack", "status", "--secure", "--json"))
    assert all(s["healthy"] for s in as_json["services"])
    secrets_dir = secure.stack_dir / "secrets"
    for secret in secrets_dir.iterdir():
        assert secret.stat().st_mode & 0o077 == 0
        value = secret.read_text().strip()
        assert value not in up + status + json.dumps(as_json) and quote(value, safe="") not in status
    assert (secure.stack_dir / "secure.env").stat().st_mode & 0o077 == 0
    # The default place (STACK_DIR=.stack -> .stack-secure) holds keys and passwords: git must never take it.
    ignored = subprocess.run(["git", "check-ignore", "-q", ".stack-secure/secure.env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0


def test_cli_refusals_are_one_line_naming_the_setting(secure, wrong_ca):
    """As a user meets them: a command with a wrong CA or password exits 2 with one error line, no traceback."""
    env = _secure_env(secure, MONGO_DB=f"refusals_{uuid.uuid4().hex[:6]}")
    ca = quote(str(secure.kafka_ssl_cafile), safe="/")
    window = ["--start", "2026-01-01T00:00:00", "--end", "2026-01-01T01:00:00"]
    cases = [
        ({"KAFKA_SSL_CAFILE": wrong_ca}, ["simulate", "--sessions", "1"], "KAFKA_SSL_CAFILE"),
        ({"MONGO_URI": _swap(env["MONGO_URI"], "sentencify:", "sentencify:wrong")}, ["run", "etl", *window], "MONGO_URI"),
        ({"ANALYTICS_DB_URI": _swap(env["ANALYTICS_DB_URI"], ca, wrong_ca)}, ["run", "views", *window], "sslrootcert"),
        ({"REDIS_URL": _swap(env["REDIS_URL"], "rediss://:", "rediss://:wrong")}, ["run", "profile", *window], "REDIS_URL"),
    ]
    for change, args, setting in cases:
        out = run_cli(*args, env={**env, **change})
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]  # the rest is progress logs
        assert out.returncode == 2 and len(errors) == 1 and setting in errors[0], (args, out.stderr[-2000:])
        assert "Traceback" not in out.stderr
        assert not any(f.read_text().strip() in out.stderr for f in (secure.stack_dir / "secrets").iterdir())


def test_kafka_sasl_refusal_is_one_line_naming_the_sasl_settings(tmp_path):
    """The secured stack's broker cannot check SASL logins (tansu keeps no SCRAM users); one started
    with --authentication refuses every login, as a managed Kafka refuses a wrong password."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    pid = spawn(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url, "--authentication"],
        pid_file=tmp_path / "broker.pid",
        log_file=tmp_path / "broker.log",
        env={"PATH": "/usr/bin:/bin"},
    )
    try:
        wait_until(lambda: port_open(port), timeout=30, what="the SASL broker", log_file=tmp_path / "broker.log")
        sasl = Settings.from_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                "KAFKA_SASL_USERNAME": "sentencify",
                "KAFKA_SASL_PASSWORD": "not-the-password",
            }
        )
        with pytest.raises(Exception) as refused:
            producer = KafkaProducer(bootstrap_servers=sasl.kafka_bootstrap_servers, max_block_ms=3000, **kafka_security(sasl))
            producer.send("sentencify.interaction_logs", b"{}").get(timeout=5)
        line = explain(refused.value, sasl)
        assert "\n" not in line and "Kafka" in line and "KAFKA_SASL_PASSWORD" in line, line
        assert "not-the-password" not in line
    finally:
        stop_pid(pid)


def test_every_client_checks_the_host_name(secure):
    """A certificate from the right CA for another host is refused: PostgreSQL for real (libpq checks
    `host` while connecting to `hostaddr`), the other clients by their settings."""
    elsewhere = secure.analytics_db_uri.replace("@127.0.0.1:", "@elsewhere.invalid:") + "&hostaddr=127.0.0.1"
    with pytest.raises(psycopg2.OperationalError, match="does not match host name"):
        psycopg2.connect(elsewhere, connect_timeout=5)
    assert kafka_security(secure)["ssl_check_hostname"] is True
    redis_kwargs = redis_lib.Redis.from_url(secure.redis_url).connection_pool.connection_kwargs
    assert redis_kwargs.get("ssl_check_hostname", True) is True and redis_kwargs["ssl_cert_reqs"] == "required"
    with MongoClient(secure.mongo_uri, connect=False) as client:
        assert client.options.pool_options.tls_allow_invalid_hostnames is False

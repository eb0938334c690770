"""docker-compose.yaml: valid for Compose (Debian's docker-compose parses and resolves it) and
complete: every setting the code reads reaches the services that run that code."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.helpers import ROOT

SUPERSET_CONFIG = ROOT / "superset" / "superset_config.py"
ENVIRON = re.compile(r'os\.environ(?:\.get\(|\[)"([A-Z0-9_]+)"')

KAFKA = {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM"}
# Present in every Kafka client's environment, empty unless the managed Kafka needs them.
KAFKA_OPTIONAL = {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE"}
CHAIN = {
    "TOPIC_PREFIX",
    "MONGO_URI",
    "MONGO_DB",
    "REDIS_URL",
    "QDRANT_URL",
    "QDRANT_API_KEY",
    "CLOCK_SKEW_S",
    "QDRANT_COLLECTION",
    "ANALYTICS_DB_URI",
    "EMBEDDING_DIM",
    "ETL_TIME_GAP_S",
    "VECTOR_REAL_THRESHOLD",
    "SUPERSET_URL",
} | KAFKA
# service -> the variables its code needs
NEEDS = {
    "consumer": KAFKA
    | {
        "TOPIC_PREFIX",
        "CONSUMER_GROUP",
        "BATCH_SIZE",
        "FLUSH_INTERVAL_MS",
        "MONGO_URI",
        "MONGO_DB",
        "REDIS_URL",
        "METRICS_PORT",
        "MAX_BUFFERED_RECORDS",
        "MAX_BUFFERED_BYTES",
        "WRITE_CONCURRENCY",
        "DLQ_MAX_BAD_RATIO",
        "DLQ_WINDOW",
        "MAX_RECORD_BYTES",
    },
    "airflow-scheduler": CHAIN,  # LocalExecutor: the tasks run here
    "airflow-dag-processor": CHAIN,
    "airflow-api": CHAIN,  # the dashboard link plugin
    "superset": {"SUPERSET_SECRET_KEY", "SUPERSET_METADATA_URI", "SUPERSET_CACHE_REDIS_URL", "SUPERSET_SESSION_COOKIE_SECURE"},
    "superset-init": {"SUPERSET_SECRET_KEY", "SUPERSET_METADATA_URI"},
    "dashboard-deploy": {"SUPERSET_URL", "SUPERSET_USERNAME", "SUPERSET_PASSWORD", "ANALYTICS_READER_URI", "AIRFLOW_URL"},
}
# Read by the code but meaningless in compose: the local stack's ports and paths, Superset's
# local secrets, knobs whose defaults are right in production too.
LOCAL_OR_DEFAULT = {
    "STACK_DIR",
    "KAFKA_PORT",
    "MONGO_PORT",
    "REDIS_PORT",
    "POSTGRES_PORT",
    "AIRFLOW_PORT",
    "SUPERSET_PORT",
    "AIRFLOW_METADATA_DB",
    "SUPERSET_METADATA_DB",
    "QDRANT_PATH",
    "TOPIC_PARTITIONS",
    "SHUTDOWN_TIMEOUT_S",
    "DEAD_LETTER_PREFIX_BYTES",
    "SUPERSET_ENABLE_PROXY_FIX",
    "SUPERSET_AUTH_RATE_LIMITED",
    "SUPERSET_WEBSERVER_TIMEOUT",
}
LONG_RUNNING = {
    "kafka",
    "mongo",
    "qdrant",
    "redis",
    "postgres",
    "consumer",
    "airflow-api",
    "airflow-scheduler",
    "airflow-dag-processor",
    "superset",
}
ONE_SHOT = {"kafka-init", "airflow-init", "superset-init", "dashboard-deploy"}


def code_reads() -> set[str]:
    """Every variable of Settings, and what Superset's configuration reads."""
    from sentencify.settings import Settings

    return set(Settings.variables()) | set(ENVIRON.findall(SUPERSET_CONFIG.read_text()))


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    """`docker-compose config` with .env.example, every secret filled in."""
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing: `make install` installs it (apt-get install docker-compose)"
    env = tmp_path_factory.mktemp("compose") / ".env"
    lines = [re.sub(r"^([A-Z0-9_]+)=$", r"\1=test-secret-\1", line) for line in (ROOT / ".env.example").read_text().splitlines()]
    env.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [compose, "--env-file", str(env), "-f", str(ROOT / "docker-compose.yaml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_a_missing_secret_is_named(tmp_path):
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text())  # secrets left empty, as committed
    out = subprocess.run(
        ["docker-compose", "--env-file", str(env), "-f", str(ROOT / "docker-compose.yaml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert out.returncode != 0 and "in .env" in out.stderr


def test_services_are_complete_healthy_and_only_the_uis_are_published(resolved):
    services = resolved["services"]
    assert set(services) == LONG_RUNNING | ONE_SHOT
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], f"{name} has no health check"
        assert services[name].get("restart") == "unless-stopped", f"{name} does not restart"
    for name in ONE_SHOT:
        assert services[name].get("restart") in ("no", None), name
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"airflow-api", "superset"}
    assert services["consumer"]["deploy"]["replicas"] >= 1 and "container_name" not in services["consumer"]
    for name in ("kafka", "mongo", "qdrant", "redis", "postgres"):
        assert services[name].get("volumes"), f"{name} keeps no data"
    assert "--replSet" in (ROOT / "deploy" / "mongo" / "entrypoint.sh").read_text()


def test_every_setting_the_code_reads_reaches_the_services_that_need_it(resolved):
    reads = code_reads()
    needed = set().union(*NEEDS.values()) | KAFKA_OPTIONAL
    assert reads - needed - LOCAL_OR_DEFAULT == set(), "a new setting: add it to the compose services that need it (and here)"
    for service, names in NEEDS.items():
        env = resolved["services"][service].get("environment") or {}
        missing = names - set(env)
        assert not missing, f"{service} lacks {sorted(missing)}"
        assert all(str(env[n]).strip() for n in names), f"{service}: empty values"
        if "KAFKA_BOOTSTRAP_SERVERS" in names:
            assert set(env) >= KAFKA_OPTIONAL, f"{service} lacks the optional Kafka security settings"
    # no secret is written in the file itself
    text = (ROOT / "docker-compose.yaml").read_text()
    assert not re.search(r"[A-Z_]*(PASSWORD|SECRET|KEY): (?!\$\{)[^\s#]+", text)


def test_production_airflow_and_superset_are_secured(resolved):
    """Airflow on the FAB auth manager with an admin from .env, a connection per store; Superset's
    session cookie secure behind TLS."""
    services = resolved["services"]
    for name in ("airflow-init", "airflow-api", "airflow-scheduler", "airflow-dag-processor"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager"), name
        assert not any("SIMPLE_AUTH_MANAGER" in k for k in env), f"{name} still configures the simple auth manager"
        for conn in ("MONGO_DEFAULT", "REDIS_DEFAULT", "QDRANT_DEFAULT", "SENTENCIFY_ANALYTICS"):
            assert env.get(f"AIRFLOW_CONN_{conn}"), f"{name} lacks the {conn.lower()} connection"
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow users create --role Admin" in init and "AIRFLOW_ADMIN_PASSWORD" in init
    assert "apache-airflow-providers-fab" in (ROOT / "deploy" / "airflow" / "Dockerfile").read_text()
    assert services["superset"]["environment"]["SUPERSET_SESSION_COOKIE_SECURE"] == "true"
    config = (ROOT / "superset" / "superset_config.py").read_text()
    assert 'SESSION_COOKIE_SECURE = os.environ.get("SUPERSET_SESSION_COOKIE_SECURE"' in config

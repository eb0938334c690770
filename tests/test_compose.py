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

CHAIN = {"KAFKA_BOOTSTRAP_SERVERS", "TOPIC_PREFIX", "MONGO_URI", "MONGO_DB", "REDIS_URL", "QDRANT_URL", "QDRANT_API_KEY",
         "QDRANT_COLLECTION", "ANALYTICS_DB_URI", "EMBEDDING_DIM", "ETL_TIME_GAP_S", "VECTOR_REAL_THRESHOLD", "SUPERSET_URL"}
# service -> the variables its code needs
NEEDS = {
    "consumer": {"KAFKA_BOOTSTRAP_SERVERS", "TOPIC_PREFIX", "CONSUMER_GROUP", "BATCH_SIZE", "FLUSH_INTERVAL_MS", "MONGO_URI",
                 "MONGO_DB", "REDIS_URL", "METRICS_PORT", "MAX_BUFFERED_RECORDS", "MAX_BUFFERED_BYTES", "WRITE_CONCURRENCY", "DLQ_MAX_BAD_RATIO",
                 "DLQ_WINDOW", "MAX_RECORD_BYTES"},
    "airflow-scheduler": CHAIN,  # LocalExecutor: the tasks run here
    "airflow-dag-processor": CHAIN,
    "airflow-api": CHAIN,  # the dashboard link plugin
    "superset": {"SUPERSET_SECRET_KEY", "SUPERSET_METADATA_URI", "SUPERSET_CACHE_REDIS_URL"},
    "superset-init": {"SUPERSET_SECRET_KEY", "SUPERSET_METADATA_URI"},
    "dashboard-deploy": {"SUPERSET_URL", "SUPERSET_USERNAME", "SUPERSET_PASSWORD", "ANALYTICS_READER_URI", "AIRFLOW_URL"},
}
# Read by the code but meaningless in compose: the local stack's ports and paths, Superset's
# local secrets, knobs whose defaults are right in production too.
LOCAL_OR_DEFAULT = {"STACK_DIR", "KAFKA_PORT", "MONGO_PORT", "REDIS_PORT", "POSTGRES_PORT", "AIRFLOW_PORT", "SUPERSET_PORT",
                    "AIRFLOW_METADATA_DB", "SUPERSET_METADATA_DB", "QDRANT_PATH", "TOPIC_PARTITIONS", "SHUTDOWN_TIMEOUT_S",
                    "DEAD_LETTER_PREFIX_BYTES", "SUPERSET_ENABLE_PROXY_FIX", "SUPERSET_AUTH_RATE_LIMITED",
                    "SUPERSET_WEBSERVER_TIMEOUT"}
LONG_RUNNING = {"kafka", "mongo", "qdrant", "redis", "postgres", "consumer", "airflow-api", "airflow-scheduler",
                "airflow-dag-processor", "superset"}
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
    out = subprocess.run([compose, "--env-file", str(env), "-f", str(ROOT / "docker-compose.yaml"), "config"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_a_missing_secret_is_named(tmp_path):
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text())  # secrets left empty, as committed
    out = subprocess.run(["docker-compose", "--env-file", str(env), "-f", str(ROOT / "docker-compose.yaml"), "config"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
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
    needed = set().union(*NEEDS.values())
    assert reads - needed - LOCAL_OR_DEFAULT == set(), "a new setting: add it to the compose services that need it (and here)"
    for service, names in NEEDS.items():
        env = resolved["services"][service].get("environment") or {}
        missing = names - set(env)
        assert not missing, f"{service} lacks {sorted(missing)}"
        assert all(str(env[n]).strip() for n in names), f"{service}: empty values"
    # no secret is written in the file itself
    text = (ROOT / "docker-compose.yaml").read_text()
    assert not re.search(r"[A-Z_]*(PASSWORD|SECRET|KEY): (?!\$\{)[^\s#]+", text)

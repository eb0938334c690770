"""docker-compose.yaml: valid for Compose (Debian's docker-compose parses and resolves it) and
complete: every setting the code reads reaches each service that runs that code.

What a service reads is derived, not listed: the modules it runs (its entry points and everything
they import, followed through the source) and every `Settings` field those modules touch, plus
what Superset's configuration reads from the environment. A new setting therefore fails here
until compose gives it to the services whose code reads it.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
from dataclasses import fields
from functools import cache
from pathlib import Path

import pytest
import yaml

from sentencify.settings import Settings
from tests.helpers import ROOT

SUPERSET_CONFIG = ROOT / "superset" / "superset_config.py"
REQUIRED_ENV = re.compile(r'os\.environ\["([A-Z0-9_]+)"\]')
OPTIONAL_ENV = re.compile(r'os\.environ\.get\("([A-Z0-9_]+)"')
VAR = {f.name: f.metadata["var"] for f in fields(Settings)}
OPTIONAL = {f.metadata["var"] for f in fields(Settings) if f.metadata["default"] is None}  # unset = off
# The local stack's code (`sentencify stack ...`, its generated logins) never runs in a container:
# the modules that fall back to it do so only for a setting compose always sets.
LOCAL_STACK = "sentencify.stack"
# pipeline/interfaces contract: "QDRANT_URL or QDRANT_PATH" - a server URL makes the path unused.
# ERASURE_KEY set: the local stack's generated key in STACK_DIR is never looked for (sentencify.erasure.keys).
ALTERNATIVE = {"QDRANT_PATH": "QDRANT_URL", "STACK_DIR": "ERASURE_KEY"}

AIRFLOW_CODE = tuple(f"dags.{p.stem}" for p in sorted((ROOT / "dags").glob("*.py"))) + tuple(
    f"sentencify_airflow.{p.stem}" for p in sorted((ROOT / "plugins" / "sentencify_airflow").glob("*.py"))
)
# service -> the modules it runs. Airflow imports every plugin module in each of its processes.
SERVICE_CODE = {
    "consumer": ("consumer.__main__",),
    "airflow-scheduler": AIRFLOW_CODE,  # LocalExecutor: the tasks run here
    "airflow-dag-processor": AIRFLOW_CODE,
    "airflow-api": AIRFLOW_CODE,
    "dashboard-deploy": ("sentencify.dashboard.deploy",),
}
SUPERSET_SERVICES = ("superset", "superset-init")  # both load superset_config.py

LONG_RUNNING = {
    "kafka",
    "mongo",
    "qdrant",
    "redis",
    "redis-cache",
    "postgres",
    "consumer",
    "airflow-api",
    "airflow-scheduler",
    "airflow-dag-processor",
    "superset",
}
ONE_SHOT = {"kafka-init", "airflow-init", "superset-init", "dashboard-deploy"}
CERTS = "/etc/sentencify/kafka"


def _source(module: str) -> Path | None:
    for base in (ROOT, ROOT / "plugins"):
        path = base.joinpath(*module.split("."))
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None  # not ours (a library)


@cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def modules_run_by(entries: tuple[str, ...]) -> dict[str, Path]:
    """The project's modules `entries` import, directly or not (imports inside functions included)."""
    seen: dict[str, Path] = {}
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen or name == LOCAL_STACK or name.startswith(LOCAL_STACK + "."):
            continue
        path = _source(name)
        if path is None:
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(_parsed(path)):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                todo += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return seen


def settings_read_by(modules: dict[str, Path]) -> set[str]:
    """Variables of the Settings fields these modules touch (`settings.batch_size` -> BATCH_SIZE)."""
    names = set()
    for module, path in modules.items():
        if module == "sentencify.settings":
            continue
        names |= {node.attr for node in ast.walk(_parsed(path)) if isinstance(node, ast.Attribute) and node.attr in VAR}
    return {VAR[name] for name in names}


def superset_reads() -> dict[str, bool]:
    """Variable -> required (os.environ["X"]) for what superset_config.py reads."""
    text = SUPERSET_CONFIG.read_text()
    return dict.fromkeys(OPTIONAL_ENV.findall(text), False) | dict.fromkeys(REQUIRED_ENV.findall(text), True)


def needs() -> dict[str, set[str]]:
    out = {service: settings_read_by(modules_run_by(entries)) for service, entries in SERVICE_CODE.items()}
    for service in SUPERSET_SERVICES:
        out[service] = set(superset_reads())
    return out


def _compose_config(env_file: Path) -> subprocess.CompletedProcess:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing: `make install` installs it (apt-get install docker-compose)"
    return subprocess.run(
        [compose, "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yaml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    """`docker-compose config` with .env.example, every secret filled in."""
    env = tmp_path_factory.mktemp("compose") / ".env"
    lines = [re.sub(r"^([A-Z0-9_]+)=$", r"\1=test-secret-\1", line) for line in (ROOT / ".env.example").read_text().splitlines()]
    env.write_text("\n".join(lines) + "\n")
    out = _compose_config(env)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_a_missing_secret_is_named(tmp_path):
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text())  # secrets left empty, as committed
    out = _compose_config(env)
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


def test_the_derivation_sees_what_each_service_runs():
    """The import walk finds the code each service runs (else the next test would prove nothing)."""
    consumer = modules_run_by(SERVICE_CODE["consumer"])
    assert {"consumer.service", "consumer.writepath", "sentencify.kafka_config"} <= set(consumer)
    airflow = modules_run_by(AIRFLOW_CODE)
    assert {"sentencify_airflow.operators", "sentencify.steps.runner", "sentencify.dashboard"} <= set(airflow)
    assert not any(m.startswith(LOCAL_STACK) for m in {*consumer, *airflow})
    reads = needs()
    assert {"SHUTDOWN_TIMEOUT_S", "DEAD_LETTER_PREFIX_BYTES", "METRICS_PORT", "KAFKA_SSL_CAFILE"} <= reads["consumer"]
    assert {"CLOCK_SKEW_S", "MONGO_DB", "SUPERSET_URL"} <= reads["airflow-scheduler"]
    assert {"SUPERSET_PASSWORD", "ANALYTICS_READER_URI"} <= reads["dashboard-deploy"]


def test_every_setting_the_code_reads_reaches_the_services_that_run_it(resolved):
    services = resolved["services"]
    for service, names in needs().items():
        env = services[service].get("environment") or {}
        missing = {n for n in names if n not in env and ALTERNATIVE.get(n) not in env}
        assert not missing, f"{service} runs code that reads {sorted(missing)}: add them to its environment in compose"
        required = {n for n in names & set(env) if n not in OPTIONAL and superset_reads().get(n, True)}
        empty = sorted(n for n in required if not str(env[n]).strip())
        assert not empty, f"{service}: empty values for {empty}"


def test_settings_no_service_reads_belong_to_the_local_stack_only():
    """A setting no compose service reads is one only the local tools use (its stack, the CLI's
    stack commands, the benches); any other code reading it would have to be wired."""
    read = set().union(*needs().values())
    unread = set(Settings.variables()) - read
    local_tools = {"sentencify.cli", "sentencify.demo_chain", "bench.ingest", "bench.chain", "sentencify.settings"}
    everything = {
        ".".join(p.relative_to(base).with_suffix("").parts): p
        for base, top in ((ROOT, "sentencify"), (ROOT, "consumer"), (ROOT, "bench"), (ROOT / "plugins", "sentencify_airflow"))
        for p in (base / top).rglob("*.py")
    }
    elsewhere = {m: p for m, p in everything.items() if not m.startswith(LOCAL_STACK) and m not in local_tools}
    leaked = unread & settings_read_by(elsewhere)
    assert not leaked, f"read outside the local stack but by no compose service: {sorted(leaked)}"


def test_kafka_clients_get_every_security_setting_and_the_certificates_read_only(resolved):
    kafka_vars = settings_read_by(modules_run_by(("sentencify.kafka_config",)))
    assert {"KAFKA_SECURITY_PROTOCOL", "KAFKA_SSL_CAFILE"} <= kafka_vars
    for name, service in resolved["services"].items():
        env = service.get("environment") or {}
        if "KAFKA_BOOTSTRAP_SERVERS" not in env:
            continue
        assert kafka_vars <= set(env), f"{name} lacks {sorted(kafka_vars - set(env))}"
        mounts = [v for v in service.get("volumes") or [] if str(v).split(":")[1:2] == [CERTS]]
        assert mounts, f"{name} names Kafka certificate files but mounts none at {CERTS}"
        assert all(str(v).endswith(":ro") for v in mounts), f"{name}: certificates must be mounted read-only"
    example = (ROOT / ".env.example").read_text()
    for var in ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE"):
        paths = re.findall(rf"^# ?{var}=(\S+)", example, re.M)
        assert paths and all(p.startswith(CERTS + "/") for p in paths), f".env.example's {var} example is not under {CERTS}"


def test_metrics_are_reachable_from_the_network_and_shutdown_fits_the_grace_period(resolved):
    consumer = resolved["services"]["consumer"]
    env = consumer["environment"]
    assert env["METRICS_HOST"] == "0.0.0.0"
    assert env["METRICS_PORT"].startswith("9") and "METRICS_PORT" in " ".join(consumer["healthcheck"]["test"])
    grace = consumer["stop_grace_period"]
    seconds = int(re.fullmatch(r"(\d+)s", grace).group(1)) if isinstance(grace, str) else int(grace)
    assert seconds >= int(env["SHUTDOWN_TIMEOUT_S"]) + 10, "SIGTERM: the flush must end before the kill"


def _bytes(size: str | int) -> int:
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)i?b?", str(size).strip().lower())
    assert match, f"not a memory size: {size!r}"
    return int(float(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " "))


def measured_peaks_mb(buffered_bytes: int) -> list[int]:
    """Peak RSS figures (MB) bench-ingest wrote for a consumer with this MAX_BUFFERED_BYTES:
    docs/benchmarks/ingest.md (run at the default) and the lines of ingest-memory.md for that size."""
    peaks: list[int] = []
    figures = ROOT / "docs" / "benchmarks"
    ingest = figures / "ingest.md"
    if ingest.exists() and buffered_bytes == Settings.from_env({}).max_buffered_bytes:
        peaks += [int(mb) for mb in re.findall(r"(?:peak RSS|peak_rss_mb=)\s*(\d+)", ingest.read_text())]
    memory = figures / "ingest-memory.md"
    if memory.exists():
        for line in memory.read_text().splitlines():
            if f"MAX_BUFFERED_BYTES={buffered_bytes // 2**20} MiB" in line:
                peaks += [int(mb) for mb in re.findall(r"peak_rss_mb=(\d+)", line)]
    return peaks


def test_the_consumers_memory_limit_covers_its_measured_peak(resolved):
    """The limit is above the peak RSS bench-ingest measured with compose's MAX_BUFFERED_BYTES
    (docs/benchmarks/), with a quarter of headroom: a container sized from the setting alone is
    OOM-killed (decoded documents, fetch buffers and the interpreter come on top)."""
    consumer = resolved["services"]["consumer"]
    limit = _bytes(consumer["deploy"]["resources"]["limits"]["memory"])
    buffered = int(consumer["environment"]["MAX_BUFFERED_BYTES"])
    assert limit >= 2 * buffered, "below twice MAX_BUFFERED_BYTES"
    peaks = measured_peaks_mb(buffered)
    if peaks:  # until a bench has run on this tree, only the rule above
        assert limit >= 1.25 * max(peaks) * 1e6, f"limit {limit / 2**20:.0f} MiB vs measured peak {max(peaks)} MB"


def _airflow_options() -> set[tuple[str, str]]:
    """Options Airflow knows: its config template, the installed providers', and the targets of
    its own renames (how `[fab] cookie_secure` is known while the FAB provider is image-only)."""
    spec = importlib.util.find_spec("airflow")  # located, not imported (an import takes seconds)
    assert spec and spec.submodule_search_locations, "apache-airflow is not installed"
    base = Path(next(iter(spec.submodule_search_locations)))
    known = {
        (section, option)
        for section, spec in yaml.safe_load((base / "config_templates" / "config.yml").read_text()).items()
        for option in spec["options"]
    }
    for info in base.glob("providers/*/get_provider_info.py"):
        tree = ast.parse(info.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "config" for k in node.keys):
                config = node.values[[k.value for k in node.keys if isinstance(k, ast.Constant)].index("config")]
                for section, spec in ast.literal_eval(config).items():
                    known |= {(section, option) for option in spec["options"]}
    renames = (base / "cli" / "commands" / "config_command.py").read_text()
    known |= set(re.findall(r'renamed_to=ConfigParameter\("(\w+)", "(\w+)"\)', renames))
    return known


def test_every_airflow_option_compose_sets_exists(resolved):
    known = _airflow_options()
    assert ("fab", "cookie_secure") in known and ("core", "executor") in known
    for name, service in resolved["services"].items():
        for var in service.get("environment") or {}:
            if var.startswith("AIRFLOW__"):
                section, option = var[len("AIRFLOW__") :].lower().split("__", 1)
                assert (section, option) in known, f"{name}: {var} is no Airflow option"


def test_no_secret_is_written_in_the_file():
    text = (ROOT / "docker-compose.yaml").read_text()
    assert not re.search(r"[A-Z_]*(PASSWORD|SECRET|KEY): (?!\$\{)[^\s#]+", text)


def test_production_airflow_and_superset_are_secured(resolved):
    """Airflow on the FAB auth manager with an admin from .env, a connection per store, session
    cookies over HTTPS only; Superset's session cookie secure behind TLS."""
    services = resolved["services"]
    for name in ("airflow-init", "airflow-api", "airflow-scheduler", "airflow-dag-processor"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager"), name
        assert not any("SIMPLE_AUTH_MANAGER" in k for k in env), f"{name} still configures the simple auth manager"
        assert env["AIRFLOW__FAB__COOKIE_SECURE"] == "true", name
        for conn in ("MONGO_DEFAULT", "REDIS_DEFAULT", "QDRANT_DEFAULT", "SENTENCIFY_ANALYTICS"):
            assert env.get(f"AIRFLOW_CONN_{conn}"), f"{name} lacks the {conn.lower()} connection"
    assert "--proxy-headers" in services["airflow-api"]["command"]
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow users create --role Admin" in init and "AIRFLOW_ADMIN_PASSWORD" in init
    assert "apache-airflow-providers-fab" in (ROOT / "deploy" / "airflow" / "Dockerfile").read_text()
    assert services["superset"]["environment"]["SUPERSET_SESSION_COOKIE_SECURE"] == "true"
    config = (ROOT / "superset" / "superset_config.py").read_text()
    assert 'SESSION_COOKIE_SECURE = os.environ.get("SUPERSET_SESSION_COOKIE_SECURE"' in config

"""`sentencify stack up|down|status`: the local services, on 127.0.0.1, with PID files and logs under STACK_DIR."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sentencify.erasure.keys import KEY_FILE as ERASURE_KEY_FILE
from sentencify.erasure.keys import generate as generate_erasure_key
from sentencify.settings import Settings
from sentencify.stack import secure
from sentencify.stack.process import (
    StackError,
    free_port,
    is_running,
    port_open,
    read_pid,
    spawn,
    stop_pid,
    stored_secret,
    wait_until,
)
from sentencify.stack.services import PostgresService, Service, services
from sentencify.stack.topics import create_topics

CORE_SERVICES = ["kafka-storage", "kafka", "mongodb", "redis", "postgres"]
AIRFLOW_SERVICES = ["airflow-api", "airflow-scheduler", "airflow-dag-processor"]
SUPERSET_SERVICES = ["superset"]

__all__ = [
    "AIRFLOW_SERVICES",
    "CORE_SERVICES",
    "SUPERSET_SERVICES",
    "ServiceStatus",
    "StackError",
    "down",
    "private_settings",
    "services",
    "status",
    "up",
]


@dataclass
class ServiceStatus:
    name: str
    port: int
    pid: int | None
    running: bool
    healthy: bool
    log_file: str


def private_settings(stack_dir: Path, env: dict[str, str] | None = None) -> Settings:
    """Settings for a throwaway stack in `stack_dir` on free ports (tests, benchmarks)."""

    ports = {
        name: str(free_port())
        for name in (
            *("KAFKA_PORT", "KAFKA_STORAGE_PORT", "MONGO_PORT", "REDIS_PORT", "POSTGRES_PORT"),
            *("AIRFLOW_PORT", "SUPERSET_PORT"),
        )
    }
    # from_env derives every URI from the ports, as for the default stack.
    return Settings.from_env({**(env or {}), **ports, "STACK_DIR": str(stack_dir), "METRICS_PORT": "0"})


def _select(settings: Settings, only: list[str] | None) -> list[Service]:
    chosen = secure.secure_services(settings) if secure.is_secure(settings) else services(settings)
    if only:
        unknown = set(only) - {s.name for s in chosen}
        if unknown:
            raise StackError(f"unknown service(s) {sorted(unknown)}; choose from {[s.name for s in chosen]}")
        chosen = [s for s in chosen if s.name in only]
    return chosen


def _with_needs(settings: Settings, only: list[str] | None) -> list[str] | None:
    """`kafka` means the broker, its storage and (secured stack) its TLS terminator: one alone is never wanted."""
    if not only or "kafka" not in only:
        return only
    needs = ["kafka-storage", "kafka-tls"] if secure.is_secure(settings) else ["kafka-storage"]
    return [*(n for n in needs if n not in only), *only]


def _start(service: Service, echo) -> None:
    pid = read_pid(service.pid_file)
    if is_running(pid, service.expect_in_cmdline) and service.healthy():
        echo(f"  {service.name:<22} already up  port {service.port}  pid {pid}")
        return
    if service.listens and port_open(service.port):
        raise StackError(
            f"port {service.port} for {service.name} is taken by another program; "
            f"stop it or choose another port ({service.name.upper()}_PORT)"
        )
    service.prepare()
    began = time.monotonic()
    pid = spawn(service.argv, pid_file=service.pid_file, log_file=service.log_file, user=service.user, env=service.env)
    wait_until(service.healthy, timeout=service.start_timeout, what=service.name, log_file=service.log_file)
    echo(f"  {service.name:<22} started     port {service.port}  pid {pid}  ({time.monotonic() - began:.1f}s)")


def up(settings: Settings, only: list[str] | None = None, echo=print) -> None:
    """Start what is not running (idempotent), then create topics and databases."""
    chosen = _select(settings, _with_needs(settings, only))
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    settings.stack_dir.chmod(0o755)  # services running as their own users (postgres) must enter it
    if not settings.erasure_key:  # the local stack's ERASURE_KEY, created once (mode 600): sentencify.erasure.keys
        stored_secret(settings.stack_dir / ERASURE_KEY_FILE, generate_erasure_key)
    for service in chosen:
        _start(service, echo)
        if isinstance(service, PostgresService):
            service.provision()
        if service.name == "kafka":
            created = create_topics(settings)
            if created:
                echo(f"  {'topics':<22} created     {len(created)} x {settings.topic_partitions} partitions")


def down(settings: Settings, only: list[str] | None = None, echo=print) -> None:
    """Stop only what this stack started (by PID file), in reverse start order."""
    for service in reversed(_select(settings, _with_needs(settings, only))):
        pid = read_pid(service.pid_file)
        if pid is None or not is_running(pid, service.expect_in_cmdline):
            echo(f"  {service.name:<22} not running")
            service.pid_file.unlink(missing_ok=True)
            continue
        ok = stop_pid(pid, sig=service.stop_signal, group=service.stop_group)
        service.pid_file.unlink(missing_ok=True)
        echo(f"  {service.name:<22} {'stopped' if ok else 'DID NOT STOP'}  pid {pid}")


def status(settings: Settings, only: list[str] | None = None) -> list[ServiceStatus]:
    out = []
    for service in _select(settings, only):
        pid = read_pid(service.pid_file)
        running = is_running(pid, service.expect_in_cmdline)
        try:
            healthy = running and service.healthy()
        except Exception:  # noqa: BLE001 (status reports, it does not fail)
            healthy = False
        out.append(ServiceStatus(service.name, service.port, pid if running else None, running, healthy, str(service.log_file)))
    return out

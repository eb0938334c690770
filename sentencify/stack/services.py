"""The local stack's services, in start order: how each starts and what it needs first."""

from __future__ import annotations

import shutil
import sys
import urllib.request
from typing import TypeVar

from sentencify.settings import Settings
from sentencify.stack import airflow, kafka_storage, superset
from sentencify.stack.postgres import PostgresService, postgres_service
from sentencify.stack.process import port_open
from sentencify.stack.service import Service, need, tansu_binary, venv_script

__all__ = ["PostgresService", "Service", "postgres_service", "services"]


class KafkaService(Service):
    pass


class KafkaStorageService(Service):
    """The broker's object store (sentencify.stack.kafka_storage): healthy once it lists its buckets."""

    def healthy(self) -> bool:
        if not port_open(self.port):
            return False
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as resp:
            return resp.status == 200


S = TypeVar("S", bound=Service)


def kafka_storage_service(settings: Settings) -> KafkaStorageService:
    """The broker's durable storage: records, watermarks and committed offsets are files under
    STACK_DIR/kafka/tansu/ (one object per record batch), kept across restarts."""
    data = settings.stack_dir / "kafka"
    return KafkaStorageService(
        name="kafka-storage",
        port=settings.kafka_storage_port,
        argv=[sys.executable, "-m", "sentencify.stack.kafka_storage", str(data), str(settings.kafka_storage_port)],
        data_dir=data,
        expect_in_cmdline="sentencify.stack.kafka_storage",
    )


def broker(settings: Settings, cls: type[S], listen_port: int) -> S:
    """tansu on `listen_port`, advertising KAFKA_PORT (the same port, or a TLS terminator's), over
    the storage of `kafka_storage_service`."""
    return cls(
        name="kafka",
        port=listen_port,
        argv=[
            tansu_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{listen_port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{settings.kafka_port}",
            "--storage-engine",
            f"s3://{kafka_storage.BUCKET}/",
        ],
        data_dir=settings.stack_dir / "kafka",
        expect_in_cmdline="tansu",
        env={"PATH": "/usr/bin:/bin", **kafka_storage.broker_env(settings.kafka_storage_port)},
    )


def kafka_services(settings: Settings) -> list[Service]:
    """The broker and, first, its durable storage."""
    return [kafka_storage_service(settings), broker(settings, KafkaService, settings.kafka_port)]


def mongod_argv(settings: Settings, *extra: str) -> list[str]:
    """The local MongoDB-protocol server on MONGO_PORT, its data under STACK_DIR/mongodb, plus `extra`."""
    return [
        venv_script("secantusd-py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.mongo_port),
        "--storage-path",
        str(settings.stack_dir / "mongodb"),
        "--log-level",
        "WARNING",
        *extra,
    ]


class MongoService(Service):
    def healthy(self) -> bool:
        from pymongo import MongoClient

        if not port_open(self.port):
            return False
        client: MongoClient = MongoClient(f"mongodb://127.0.0.1:{self.port}", serverSelectionTimeoutMS=1000)
        with client:
            return client.admin.command("ping").get("ok") == 1


class RedisService(Service):
    def healthy(self) -> bool:
        import redis

        if not port_open(self.port):
            return False
        return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping())


class AirflowService(Service):
    """api-server, scheduler or dag-processor: one Airflow component (they share one environment)."""

    settings: Settings | None = None
    component: str = ""

    @property
    def stack(self) -> Settings:
        assert self.settings is not None, "set by airflow_services()"
        return self.settings

    def prepare(self) -> None:

        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.component == "api-server":
            airflow.migrate(self.stack)

    def healthy(self) -> bool:

        if not port_open(self.stack.airflow_port):
            return False
        if self.component == "api-server":
            return "metadatabase" in airflow._health(self.stack)
        return airflow.component_healthy(self.stack, self.component.replace("-", "_"))


class SupersetService(Service):
    """The Superset web server (gunicorn), from its own virtualenv."""

    settings: Settings | None = None

    @property
    def stack(self) -> Settings:
        assert self.settings is not None, "set by superset_service()"
        return self.settings

    def prepare(self) -> None:

        self.data_dir.mkdir(parents=True, exist_ok=True)
        superset.setup(self.stack)
        # Resolved here, not at construction: a stack without .venv-superset still starts the rest.
        self.argv, self.env = superset.server_argv(self.stack), superset.superset_env(self.stack)

    def healthy(self) -> bool:

        return port_open(self.port) and superset.healthy(self.stack)


def superset_service(settings: Settings) -> Service:

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


def airflow_services(settings: Settings) -> list[Service]:

    env = airflow.airflow_env(settings)
    out: list[Service] = []
    for component, argv in (
        ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(settings.airflow_port), "--workers", "1"]),
        ("scheduler", ["scheduler"]),
        ("dag-processor", ["dag-processor"]),
    ):
        svc = AirflowService(
            name=f"airflow-{component}" if component != "api-server" else "airflow-api",
            port=settings.airflow_port,
            argv=[airflow.airflow_bin(), *argv],
            data_dir=airflow.airflow_home(settings),
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
    redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
    return [
        *kafka_services(settings),
        MongoService(
            name="mongodb",
            port=settings.mongo_port,
            # Test-only commands (configureFailPoint) let the failure tests inject faults.
            argv=mongod_argv(settings, "--enable-test-commands"),
            data_dir=root / "mongodb",
            expect_in_cmdline="secantusd",
        ),
        RedisService(
            name="redis",
            port=settings.redis_port,
            argv=[
                need(redis_bin, "redis-server", "run `make install` (apt-get install redis-server)"),
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
        postgres_service(settings),
        *airflow_services(settings),
        superset_service(settings),
    ]

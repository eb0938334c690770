"""`sentencify stack up --secure`: the data services with TLS and a login on every connection.

Its own directory (STACK_DIR + "-secure" by default) and ports; the plain stack stays the default.

| service | TLS | login |
|---|---|---|
| Kafka | stunnel in front of the broker, which advertises the TLS address | client certificate (`KAFKA_SECURITY_PROTOCOL=SSL`) |
| MongoDB | the server's own TLS | SCRAM-SHA-256 user, `--auth` |
| Redis | `--tls-port`, plaintext port 0 | `requirepass` |
| PostgreSQL | `ssl=on`, `hostssl` only | scram-sha-256 |

Kafka has no SASL here: the broker (tansu 0.6 with its only compiled engine, dynostore) accepts
`--authentication` but keeps no SCRAM credentials (its `user_scram_credential` returns none), so no
user can ever log in; a client certificate checked by the TLS terminator is the login instead.
The broker's own plaintext listener and its storage listen on 127.0.0.1 only, for the terminator.

Secrets (passwords, keys) live in files of mode 600 under the stack directory; `secure.env` holds
the settings to reach the stack, and nothing prints a secret.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

from sentencify.settings import Settings
from sentencify.stack.certs import Certs, ensure_certs
from sentencify.stack.postgres import PG_BIN_DIR, PostgresService
from sentencify.stack.process import StackError, free_port, port_open, spawn, stop_pid, stored_secret, wait_until, write_private
from sentencify.stack.service import Service, need, run_as
from sentencify.stack.services import broker, kafka_storage_service, mongod_argv

CONFIG = "secure.json"
DEFAULT_PORTS = {
    "KAFKA_PORT": 29092,
    "broker": 29093,
    "KAFKA_STORAGE_PORT": 29094,
    "MONGO_PORT": 37027,
    "REDIS_PORT": 16389,
    "POSTGRES_PORT": 25432,
}
MONGO_USER, PG_USER, PG_READER = "sentencify", "sentencify", "sentencify_reader"


def is_secure(settings: Settings) -> bool:
    return (settings.stack_dir / CONFIG).exists()


def _secret(root: Path, name: str) -> str:
    return stored_secret(root / "secrets" / name, lambda: secrets.token_urlsafe(18))


def secure_settings(stack_dir: Path, *, private: bool = False, env: dict[str, str] | None = None) -> Settings:
    """Settings of the secured stack in `stack_dir` (made on first use: ports, passwords, certificates).

    `private`: free ports (tests). Also writes `stack_dir/secure.env` (mode 600), the same settings as
    environment variables, for other processes to source."""
    stack_dir = stack_dir.resolve()
    stack_dir.mkdir(parents=True, exist_ok=True)
    stack_dir.chmod(0o755)
    config = stack_dir / CONFIG
    if config.exists():
        ports = json.loads(config.read_text())
    else:
        ports = {k: free_port() for k in DEFAULT_PORTS} if private else dict(DEFAULT_PORTS)
        config.write_text(json.dumps(ports))
    certs = ensure_certs(stack_dir / "tls")
    ca = quote(str(certs.ca), safe="/")
    mongo_pw, redis_pw = quote(_secret(stack_dir, "mongo"), safe=""), quote(_secret(stack_dir, "redis"), safe="")
    pg_pw, reader_pw = quote(_secret(stack_dir, "postgres"), safe=""), quote(_secret(stack_dir, "postgres_reader"), safe="")
    pg = f"127.0.0.1:{ports['POSTGRES_PORT']}/analytics?sslmode=verify-full&sslrootcert={ca}"
    values = {
        "STACK_DIR": str(stack_dir),
        **{k: str(v) for k, v in ports.items() if k != "broker"},
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": str(certs.ca),
        "KAFKA_SSL_CERTFILE": str(certs.client),
        "KAFKA_SSL_KEYFILE": str(certs.client_key),
        "MONGO_URI": (
            f"mongodb://{MONGO_USER}:{mongo_pw}@127.0.0.1:{ports['MONGO_PORT']}/"
            f"?tls=true&tlsCAFile={ca}&authSource=admin&authMechanism=SCRAM-SHA-256"
        ),
        "REDIS_URL": f"rediss://:{redis_pw}@127.0.0.1:{ports['REDIS_PORT']}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required",
        "ANALYTICS_DB_URI": f"postgresql://{PG_USER}:{pg_pw}@{pg}",
        "ANALYTICS_READER_URI": f"postgresql://{PG_READER}:{reader_pw}@{pg}",
    }
    write_private(stack_dir / "secure.env", "".join(f"{k}='{v}'\n" for k, v in values.items()))
    return Settings.from_env({**(env or {}), **values})


def broker_port(settings: Settings) -> int:
    return int(json.loads((settings.stack_dir / CONFIG).read_text())["broker"])


def certs_of(settings: Settings) -> Certs:
    return Certs(settings.stack_dir / "tls")


def _password(settings: Settings, name: str) -> str:
    return (settings.stack_dir / "secrets" / name).read_text().strip()


class SecureMongo(Service):
    settings: Settings | None = None

    def prepare(self) -> None:
        """Users are made once, on a first start without --auth; then the real start has --auth."""
        super().prepare()
        stamp = self.data_dir / ".users"
        if stamp.exists():
            return
        assert self.settings is not None
        bootstrap = [a for a in self.argv if a != "--auth"]
        pid = spawn(bootstrap, pid_file=self.pid_file, log_file=self.log_file)
        try:
            from pymongo import MongoClient

            client: MongoClient = MongoClient(self._uri(login=False), serverSelectionTimeoutMS=2000)
            wait_until(
                lambda: client.admin.command("ping")["ok"] == 1, timeout=60, what="mongodb (first start)", log_file=self.log_file
            )
            if not client.admin.command("usersInfo", MONGO_USER)["users"]:
                client.admin.command(
                    "createUser",
                    MONGO_USER,
                    pwd=_password(self.settings, "mongo"),
                    roles=[{"role": "root", "db": "admin"}],
                    mechanisms=["SCRAM-SHA-256"],
                )
            client.close()
        finally:
            stop_pid(pid)
        stamp.touch()

    def _uri(self, *, login: bool = True) -> str:
        assert self.settings is not None
        if login:
            return self.settings.mongo_uri
        return f"mongodb://127.0.0.1:{self.port}/?tls=true&tlsCAFile={quote(str(certs_of(self.settings).ca), safe='/')}"

    def healthy(self) -> bool:
        from pymongo import MongoClient

        if not port_open(self.port):
            return False
        with MongoClient(  # type: ignore[var-annotated]
            self._uri(), serverSelectionTimeoutMS=1000
        ) as client:
            return client.admin.command("ping").get("ok") == 1


class SecureRedis(Service):
    settings: Settings | None = None

    def prepare(self) -> None:
        super().prepare()
        assert self.settings is not None
        certs = certs_of(self.settings)
        write_private(
            self.data_dir / "redis.conf",
            "\n".join(
                [
                    "port 0",  # no plaintext listener
                    f"tls-port {self.port}",
                    "bind 127.0.0.1",
                    f"tls-cert-file {certs.server}",
                    f"tls-key-file {certs.server_key}",
                    f"tls-ca-cert-file {certs.ca}",
                    "tls-auth-clients no",  # the password is the login
                    f"requirepass {_password(self.settings, 'redis')}",
                    f"dir {self.data_dir}",
                    "save 60 1",
                    "appendonly no",
                    "daemonize no",
                ]
            )
            + "\n",
        )

    def healthy(self) -> bool:
        import redis

        assert self.settings is not None
        return port_open(self.port) and bool(redis.Redis.from_url(self.settings.redis_url, socket_timeout=1).ping())


class SecurePostgres(PostgresService):
    settings: Settings | None = None
    psql_over_socket: bool = True

    def prepare(self) -> None:
        initdb = need(PG_BIN_DIR / "initdb", "PostgreSQL 15", "run `make install` (apt-get install postgresql-15)")
        assert self.settings is not None
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.chmod(0o700)  # the superuser's trusted socket: its owner (and root) only
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        certs = certs_of(self.settings)
        pwfile = self.data_dir.parent / "secrets" / "postgres"
        if self.user:
            shutil.chown(self.data_dir, self.user, self.user)
            shutil.chown(self.socket_dir, self.user, self.user)
        subprocess.run(
            [
                initdb,
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=reject",
                "-E",
                "UTF8",
                "--no-locale",
            ],
            check=True,
            capture_output=True,
            user=self.user,
            group=self.user,
        )
        # The server reads its key only when it owns it with mode 600: a copy in its data directory.
        for src, name in ((certs.server, "server.crt"), (certs.server_key, "server.key"), (certs.ca, "root.crt")):
            dst = self.data_dir / name
            shutil.copyfile(src, dst)
            dst.chmod(0o600)
            if self.user:
                shutil.chown(dst, self.user, self.user)
        (self.data_dir / "pg_hba.conf").write_text(
            "local all postgres trust\n"  # the stack's own provisioning, over the 0700 socket directory
            "hostnossl all all 0.0.0.0/0 reject\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        )
        del pwfile

    def healthy(self) -> bool:
        return port_open(self.port) and self.psql("select 1").strip() == "1"

    def provision(self) -> None:
        assert self.settings is not None
        super().provision()
        for role, secret in ((PG_USER, "postgres"), (PG_READER, "postgres_reader")):
            password = _password(self.settings, secret).replace("'", "''")
            self.psql(f"alter role {role} with login password '{password}'")


class Stunnel(Service):
    settings: Settings | None = None

    def prepare(self) -> None:
        super().prepare()
        assert self.settings is not None
        certs = certs_of(self.settings)
        (self.data_dir / "stunnel.conf").write_text(
            "\n".join(
                [
                    "foreground = yes",
                    f"pid = {self.data_dir / 'stunnel.pid'}",
                    "[kafka]",
                    f"accept = 127.0.0.1:{self.port}",
                    f"connect = 127.0.0.1:{broker_port(self.settings)}",
                    f"cert = {certs.server}",
                    f"key = {certs.server_key}",
                    f"CAfile = {certs.ca}",
                    "verifyChain = yes",  # a client certificate signed by the stack's CA is the login
                    "requireCert = yes",
                    "sslVersionMin = TLSv1.2",
                    # No TLS 1.3 session tickets: they arrive after the handshake, and kafka-python
                    # closes a connection that turns readable before its first request
                    # ("Socket EVENT_READ without in-flight-requests"): the admin client's
                    # second connection, to the controller, died that way.
                    "sessionResume = no",
                ]
            )
            + "\n"
        )


def secure_services(settings: Settings) -> list[Service]:
    """The secured data services, in start order (Airflow and Superset are not part of it)."""
    root = settings.stack_dir
    inner = broker_port(settings)
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    storage = kafka_storage_service(settings)
    tls = Stunnel(
        name="kafka-tls",
        port=settings.kafka_port,
        argv=[
            need(stunnel, "stunnel", "run `make install` (apt-get install stunnel4)"),
            str(root / "kafka-tls" / "stunnel.conf"),
        ],
        data_dir=root / "kafka-tls",
        expect_in_cmdline="stunnel",
    )
    kafka = broker(settings, SecureBroker, inner)  # clients reach it through the TLS terminator
    certs = certs_of(settings)
    mongo = SecureMongo(
        name="mongodb",
        port=settings.mongo_port,
        argv=mongod_argv(settings, "--tls-cert-file", str(certs.server), "--tls-key-file", str(certs.server_key), "--auth"),
        data_dir=root / "mongodb",
        expect_in_cmdline="secantusd",
    )
    redis = SecureRedis(
        name="redis",
        port=settings.redis_port,
        argv=[
            need(shutil.which("redis-server") or "/usr/bin/redis-server", "redis-server", "run `make install`"),
            str(root / "redis" / "redis.conf"),
        ],
        data_dir=root / "redis",
        expect_in_cmdline="redis-server",
    )
    pg_dir = root / "postgres"
    postgres = SecurePostgres(
        name="postgres",
        port=settings.postgres_port,
        argv=[
            str(PG_BIN_DIR / "postgres"),
            "-D",
            str(pg_dir),
            "-p",
            str(settings.postgres_port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={root / 'pg_socket'}",
            "-c",
            "timezone=UTC",
            "-c",
            "ssl=on",
            "-c",
            "ssl_min_protocol_version=TLSv1.2",
            "-c",
            "password_encryption=scram-sha-256",
        ],
        data_dir=pg_dir,
        expect_in_cmdline="postgres",
        stop_signal=2,  # SIGINT: fast shutdown
        user=run_as(),
    )
    for svc in (tls, kafka, mongo, redis, postgres):
        svc.settings = settings
    return [storage, tls, kafka, mongo, redis, postgres]


class SecureBroker(Service):
    settings: Settings | None = None

    def healthy(self) -> bool:
        """Metadata over TLS through the terminator, then a request on a fresh connection to every broker
        at the address it advertises (what the admin client does next, to the controller): the broker
        must advertise the TLS address, and that address must carry requests, not only handshakes."""
        from kafka.admin import KafkaAdminClient
        from kafka.protocol.metadata import MetadataRequest

        from sentencify.kafka_config import kafka_security

        assert self.settings is not None
        if not port_open(self.port):
            return False
        admin = KafkaAdminClient(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            request_timeout_ms=5000,
            client_id="sentencify-stack-probe",
            **kafka_security(self.settings),
        )
        try:
            brokers = admin.send_request(MetadataRequest[1](topics=[])).brokers  # (node_id, host, port, rack)
            advertised = {(host, port) for _, host, port, _ in brokers}
            if advertised != {("127.0.0.1", self.settings.kafka_port)}:
                raise StackError(f"the broker advertises {sorted(advertised)}, not the TLS address")
            for node_id, *_ in brokers:
                admin.send_request(MetadataRequest[1](topics=[]), node_id=node_id)
        finally:
            admin.close()
        return True

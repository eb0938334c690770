"""Settings from environment variables; the defaults point at the local stack (`sentencify stack up`).

Every variable is documented in docs/settings.md. A bad value fails fast with the variable's name.
Each setting is declared once, below: its field, variable, parser and default together.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sentencify import contract
from sentencify.errors import ConfigurationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ConfigurationError, ValueError):
    """A setting has a value the code cannot use."""


Parser = Callable[[str, str], Any]  # (variable name, raw text) -> value


def _text(name: str, raw: str) -> str:
    return raw


def _int(minimum: int | None = None) -> Parser:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"{name} must be >= {minimum}, got {value}")
        return value

    return parse


def _float(lo: float, hi: float) -> Parser:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _choice(*allowed: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper()
        if value not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _file(name: str, raw: str) -> str:
    if not Path(raw).is_file():
        raise SettingsError(f"{name} names {raw!r}, which is not a readable file")
    return raw


def _url(name: str, raw: str) -> str:
    return _uri("http", "https")(name, raw).rstrip("/")


def _uri(*schemes: str) -> Parser:
    """A connection URI with one of `schemes` and a host; the message never shows its password."""

    def parse(name: str, raw: str) -> str:
        from urllib.parse import urlsplit

        from sentencify.redact import redact_uri

        shown = redact_uri(raw)
        try:
            parts = urlsplit(raw.strip())
            host = parts.hostname
        except ValueError as exc:
            raise SettingsError(f"{name} is not a URI ({exc}): {shown!r}") from None
        if parts.scheme not in schemes:
            raise SettingsError(f"{name} must start with {' or '.join(s + '://' for s in schemes)}, got {shown!r}")
        if not host and parts.scheme not in ("unix",):
            raise SettingsError(f"{name} has no host: {shown!r}")
        return raw.strip()

    return parse


def _brokers(name: str, raw: str) -> str:
    for broker in raw.split(","):
        host, _, port = broker.strip().rpartition(":")
        if not host or not port.isdigit():
            raise SettingsError(f"{name} must be host:port[,host:port], got {raw!r}")
    return raw.strip()


def _path(name: str, raw: str) -> Path:
    return Path(raw).resolve()


POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")


def _setting(var: str, parse: Parser, default: Any | Callable[[dict], Any], *, secret: bool | str = False):
    """A dataclass field read from `var`. `default` is a value, or a function of the settings
    declared above it (the local stack's ports come first, so URIs can follow them).
    `secret`: True for a secret (never shown), "uri" for a URI whose password is never shown."""
    return field(metadata={"var": var, "parse": parse, "default": default, "secret": secret})


@dataclass(frozen=True, repr=False)
class Settings:
    # local stack: its directory and ports (127.0.0.1); the defaults below follow them
    stack_dir: Path = _setting("STACK_DIR", _path, PROJECT_ROOT / ".stack")
    kafka_port: int = _setting("KAFKA_PORT", _int(1), 19092)
    kafka_storage_port: int = _setting("KAFKA_STORAGE_PORT", _int(1), 19094)  # the broker's object store
    mongo_port: int = _setting("MONGO_PORT", _int(1), 27027)
    redis_port: int = _setting("REDIS_PORT", _int(1), 6389)
    postgres_port: int = _setting("POSTGRES_PORT", _int(1), 15432)
    airflow_port: int = _setting("AIRFLOW_PORT", _int(1), 8080)
    airflow_metadata_db: str = _setting("AIRFLOW_METADATA_DB", _text, "airflow")
    superset_port: int = _setting("SUPERSET_PORT", _int(1), 8088)
    superset_metadata_db: str = _setting("SUPERSET_METADATA_DB", _text, "superset")

    # interfaces.md (the contract)
    kafka_bootstrap_servers: str = _setting("KAFKA_BOOTSTRAP_SERVERS", _brokers, lambda s: f"127.0.0.1:{s['kafka_port']}")
    kafka_security_protocol: str = _setting(
        "KAFKA_SECURITY_PROTOCOL", _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"), "PLAINTEXT"
    )
    kafka_sasl_mechanism: str = _setting("KAFKA_SASL_MECHANISM", _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), "PLAIN")
    kafka_sasl_username: str | None = _setting("KAFKA_SASL_USERNAME", _text, None)
    kafka_sasl_password: str | None = _setting("KAFKA_SASL_PASSWORD", _text, None, secret=True)
    kafka_ssl_cafile: str | None = _setting("KAFKA_SSL_CAFILE", _file, None)
    kafka_ssl_certfile: str | None = _setting("KAFKA_SSL_CERTFILE", _file, None)
    kafka_ssl_keyfile: str | None = _setting("KAFKA_SSL_KEYFILE", _file, None)
    topic_prefix: str = _setting("TOPIC_PREFIX", _text, contract.DEFAULT_TOPIC_PREFIX)
    consumer_group: str = _setting("CONSUMER_GROUP", _text, "sentencify-ingest")
    batch_size: int = _setting("BATCH_SIZE", _int(1), 100)
    flush_interval_ms: int = _setting("FLUSH_INTERVAL_MS", _int(1), 1000)
    mongo_uri: str = _setting(
        "MONGO_URI", _uri("mongodb", "mongodb+srv"), lambda s: f"mongodb://127.0.0.1:{s['mongo_port']}", secret="uri"
    )
    mongo_db: str = _setting("MONGO_DB", _text, "sentencify")
    redis_url: str = _setting(
        "REDIS_URL", _uri("redis", "rediss", "unix"), lambda s: f"redis://127.0.0.1:{s['redis_port']}/0", secret="uri"
    )
    qdrant_url: str | None = _setting("QDRANT_URL", _uri("http", "https"), None, secret="uri")
    # Local mode only when no server URL is given.
    qdrant_path: str | None = _setting(
        "QDRANT_PATH", _text, lambda s: None if s["qdrant_url"] else str(s["stack_dir"] / "qdrant")
    )
    qdrant_collection: str = _setting("QDRANT_COLLECTION", _text, "context_block_v1")
    qdrant_api_key: str | None = _setting("QDRANT_API_KEY", _text, None, secret=True)  # a Qdrant server's key
    analytics_db_uri: str = _setting(
        "ANALYTICS_DB_URI",
        _uri(*POSTGRES_SCHEMES),
        lambda s: f"postgresql://sentencify@127.0.0.1:{s['postgres_port']}/analytics",
        secret="uri",
    )
    embedding_dim: int = _setting("EMBEDDING_DIM", _int(1), 384)
    clock_skew_s: int = _setting("CLOCK_SKEW_S", _int(0), 300)  # how far a consumer's clock may lag (pipeline.md)
    # how long a step's lease lives without renewal, judged by MongoDB's clock (sentencify.steps.lease)
    lease_ttl_s: float = _setting("LEASE_TTL_S", _float(1.0, 86400.0), 60.0)
    # the HMAC key of erased users' hashes (sentencify.erasure.keys); None: the local stack's generated one
    erasure_key: str | None = _setting("ERASURE_KEY", _text, None, secret=True)

    # chain (pipeline.md thresholds)
    etl_time_gap_s: float = _setting("ETL_TIME_GAP_S", _float(0.0, 86400.0), 5.0)
    vector_real_threshold: int = _setting("VECTOR_REAL_THRESHOLD", _int(1), 20)
    # Airflow deadline: seconds after its hour's end (ETL) or its queueing (later steps) a run must be done
    run_deadline_s: int = _setting("RUN_DEADLINE_S", _int(1), 1800)

    # bounds at any size (pipeline.md "Bounds at any size"): request bytes, waits
    mongo_max_request_bytes: int = _setting("MONGO_MAX_REQUEST_BYTES", _int(1024 * 1024), 48_000_000)
    redis_max_request_bytes: int = _setting("REDIS_MAX_REQUEST_BYTES", _int(64 * 1024), 8 * 1024 * 1024)
    qdrant_max_request_bytes: int = _setting("QDRANT_MAX_REQUEST_BYTES", _int(1024 * 1024), 32 * 1024 * 1024)
    views_lock_timeout_s: float = _setting("VIEWS_LOCK_TIMEOUT_S", _float(0.001, 86400.0), 60.0)
    views_statement_timeout_s: float = _setting("VIEWS_STATEMENT_TIMEOUT_S", _float(0.001, 86400.0), 900.0)
    store_timeout_s: float = _setting("STORE_TIMEOUT_S", _float(1.0, 86400.0), 600.0)
    task_execution_timeout_s: int = _setting("TASK_EXECUTION_TIMEOUT_S", _int(60), 4 * 3600)

    # consumer
    max_record_bytes: int = _setting("MAX_RECORD_BYTES", _int(1), 1024 * 1024)
    dead_letter_prefix_bytes: int = _setting("DEAD_LETTER_PREFIX_BYTES", _int(0), 4096)
    dlq_max_bad_ratio: float = _setting("DLQ_MAX_BAD_RATIO", _float(0.0, 1.0), 0.5)
    dlq_window: int = _setting("DLQ_WINDOW", _int(1), 200)
    max_buffered_records: int = _setting("MAX_BUFFERED_RECORDS", _int(1), 20_000)
    max_buffered_bytes: int = _setting("MAX_BUFFERED_BYTES", _int(1024 * 1024), 64 * 1024 * 1024)
    write_concurrency: int = _setting("WRITE_CONCURRENCY", _int(1), 2)
    metrics_port: int = _setting("METRICS_PORT", _int(-1), 9108)
    # 0.0.0.0 in a container, so Prometheus can reach /metrics; 127.0.0.1 keeps it on the machine
    metrics_host: str = _setting("METRICS_HOST", _text, "127.0.0.1")
    shutdown_timeout_s: int = _setting("SHUTDOWN_TIMEOUT_S", _int(1), 10)
    topic_partitions: int = _setting("TOPIC_PARTITIONS", _int(1), 4)

    # dashboard (Superset) and the links between the UIs
    analytics_reader_uri: str = _setting(
        "ANALYTICS_READER_URI",
        _uri(*POSTGRES_SCHEMES),
        lambda s: f"postgresql://sentencify_reader@127.0.0.1:{s['postgres_port']}/analytics",
        secret="uri",
    )
    airflow_url: str = _setting("AIRFLOW_URL", _url, lambda s: f"http://127.0.0.1:{s['airflow_port']}")
    superset_url: str = _setting("SUPERSET_URL", _url, lambda s: f"http://127.0.0.1:{s['superset_port']}")
    superset_username: str = _setting("SUPERSET_USERNAME", _text, "admin")
    superset_password: str | None = _setting("SUPERSET_PASSWORD", _text, None, secret=True)  # None: the local stack's
    superset_secret_key: str | None = _setting("SUPERSET_SECRET_KEY", _text, None, secret=True)  # None: the local stack's

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            meta = f.metadata
            raw = e.get(meta["var"])
            if raw is None or raw == "":
                default = meta["default"]
                values[f.name] = default(values) if callable(default) else default
            else:
                values[f.name] = meta["parse"](meta["var"], raw)
        settings = cls(**values)
        if not settings.topic_prefix.strip():
            raise SettingsError("TOPIC_PREFIX must not be blank")
        if settings.kafka_security_protocol.startswith("SASL_") and not (
            settings.kafka_sasl_username and settings.kafka_sasl_password
        ):
            raise SettingsError(
                f"KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        return settings

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{f.name}={self.shown(f.name)!r}' for f in fields(self))})"

    def shown(self, name: str) -> Any:
        """A setting as it may be printed or logged: secrets masked, URIs without their password."""
        from sentencify.redact import redact_uri

        value = getattr(self, name)
        kind = next(f.metadata["secret"] for f in fields(self) if f.name == name)
        if value is None or not kind:
            return value
        return redact_uri(str(value)) if kind == "uri" else "***"

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process (unset ones are left out)."""
        return {f.metadata["var"]: str(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def variables(cls) -> list[str]:
        return [f.metadata["var"] for f in fields(cls)]

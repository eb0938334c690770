"""Settings from environment variables; the defaults point at the local stack (`sentencify stack up`).

Every variable is documented in README.md. A bad value fails fast with the variable's name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A setting has a value the code cannot use."""


def _int(env: dict[str, str], name: str, default: int, minimum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _str(env: dict[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name)
    return default if raw is None or raw == "" else raw


@dataclass(frozen=True)
class Settings:
    # interfaces.md (the contract)
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    topic_prefix: str = "sentencify."
    consumer_group: str = "sentencify-ingest"
    batch_size: int = 100
    flush_interval_ms: int = 1000
    mongo_uri: str = "mongodb://127.0.0.1:27027"
    mongo_db: str = "sentencify"
    redis_url: str = "redis://127.0.0.1:6389/0"
    qdrant_url: str | None = None
    qdrant_path: str | None = None
    qdrant_collection: str = "context_block_v1"
    qdrant_api_key: str | None = None  # a Qdrant server's API key (production)
    analytics_db_uri: str = "postgresql://sentencify@127.0.0.1:15432/analytics"
    embedding_dim: int = 384

    # chain (pipeline.md thresholds)
    etl_time_gap_s: float = 5.0
    vector_real_threshold: int = 20

    # consumer
    max_record_bytes: int = 1024 * 1024
    dead_letter_prefix_bytes: int = 4096
    dlq_max_bad_ratio: float = 0.5
    dlq_window: int = 200
    max_buffered_records: int = 20_000
    write_concurrency: int = 2
    metrics_port: int = 9108
    shutdown_timeout_s: int = 10
    topic_partitions: int = 4

    # local stack
    stack_dir: Path = field(default_factory=lambda: PROJECT_ROOT / ".stack")
    kafka_port: int = 19092
    mongo_port: int = 27027
    redis_port: int = 6389
    postgres_port: int = 15432
    airflow_port: int = 8080
    airflow_metadata_db: str = "airflow"

    # dashboard (Superset)
    analytics_reader_uri: str = "postgresql://sentencify_reader@127.0.0.1:15432/analytics"
    airflow_url: str = "http://127.0.0.1:8080"
    superset_port: int = 8088
    superset_url: str = "http://127.0.0.1:8088"
    superset_username: str = "admin"
    superset_password: str | None = None  # None: the local stack's generated one
    superset_secret_key: str | None = None  # None: the local stack's generated one
    superset_metadata_db: str = "superset"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        e = dict(os.environ if env is None else env)
        stack_dir = Path(_str(e, "STACK_DIR", str(PROJECT_ROOT / ".stack"))).resolve()
        kafka_port = _int(e, "KAFKA_PORT", 19092, 1)
        mongo_port = _int(e, "MONGO_PORT", 27027, 1)
        redis_port = _int(e, "REDIS_PORT", 6389, 1)
        postgres_port = _int(e, "POSTGRES_PORT", 15432, 1)
        airflow_port = _int(e, "AIRFLOW_PORT", 8080, 1)
        superset_port = _int(e, "SUPERSET_PORT", 8088, 1)
        qdrant_url = _str(e, "QDRANT_URL", None)
        settings = cls(
            kafka_bootstrap_servers=_str(e, "KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{kafka_port}"),
            topic_prefix=_str(e, "TOPIC_PREFIX", "sentencify."),
            consumer_group=_str(e, "CONSUMER_GROUP", "sentencify-ingest"),
            batch_size=_int(e, "BATCH_SIZE", 100, 1),
            flush_interval_ms=_int(e, "FLUSH_INTERVAL_MS", 1000, 1),
            mongo_uri=_str(e, "MONGO_URI", f"mongodb://127.0.0.1:{mongo_port}"),
            mongo_db=_str(e, "MONGO_DB", "sentencify"),
            redis_url=_str(e, "REDIS_URL", f"redis://127.0.0.1:{redis_port}/0"),
            qdrant_url=qdrant_url,
            # Local mode only when no server URL is given.
            qdrant_path=_str(e, "QDRANT_PATH", None if qdrant_url else str(stack_dir / "qdrant")),
            qdrant_collection=_str(e, "QDRANT_COLLECTION", "context_block_v1"),
            qdrant_api_key=_str(e, "QDRANT_API_KEY", None),
            analytics_db_uri=_str(
                e, "ANALYTICS_DB_URI", f"postgresql://sentencify@127.0.0.1:{postgres_port}/analytics"
            ),
            embedding_dim=_int(e, "EMBEDDING_DIM", 384, 1),
            etl_time_gap_s=_float(e, "ETL_TIME_GAP_S", 5.0, 0.0, 86400.0),
            vector_real_threshold=_int(e, "VECTOR_REAL_THRESHOLD", 20, 1),
            max_record_bytes=_int(e, "MAX_RECORD_BYTES", 1024 * 1024, 1),
            dead_letter_prefix_bytes=_int(e, "DEAD_LETTER_PREFIX_BYTES", 4096, 0),
            dlq_max_bad_ratio=_float(e, "DLQ_MAX_BAD_RATIO", 0.5, 0.0, 1.0),
            dlq_window=_int(e, "DLQ_WINDOW", 200, 1),
            max_buffered_records=_int(e, "MAX_BUFFERED_RECORDS", 20_000, 1),
            write_concurrency=_int(e, "WRITE_CONCURRENCY", 2, 1),
            metrics_port=_int(e, "METRICS_PORT", 9108, -1),
            shutdown_timeout_s=_int(e, "SHUTDOWN_TIMEOUT_S", 10, 1),
            topic_partitions=_int(e, "TOPIC_PARTITIONS", 4, 1),
            stack_dir=stack_dir,
            kafka_port=kafka_port,
            mongo_port=mongo_port,
            redis_port=redis_port,
            postgres_port=postgres_port,
            airflow_port=airflow_port,
            airflow_metadata_db=_str(e, "AIRFLOW_METADATA_DB", "airflow"),
            analytics_reader_uri=_str(
                e, "ANALYTICS_READER_URI", f"postgresql://sentencify_reader@127.0.0.1:{postgres_port}/analytics"
            ),
            airflow_url=_str(e, "AIRFLOW_URL", f"http://127.0.0.1:{airflow_port}").rstrip("/"),
            superset_port=superset_port,
            superset_url=_str(e, "SUPERSET_URL", f"http://127.0.0.1:{superset_port}").rstrip("/"),
            superset_username=_str(e, "SUPERSET_USERNAME", "admin"),
            superset_password=_str(e, "SUPERSET_PASSWORD", None),
            superset_secret_key=_str(e, "SUPERSET_SECRET_KEY", None),
            superset_metadata_db=_str(e, "SUPERSET_METADATA_DB", "superset"),
        )
        if not settings.topic_prefix.strip():
            raise SettingsError("TOPIC_PREFIX must not be blank")
        return settings

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "TOPIC_PREFIX": self.topic_prefix,
            "CONSUMER_GROUP": self.consumer_group,
            "BATCH_SIZE": str(self.batch_size),
            "FLUSH_INTERVAL_MS": str(self.flush_interval_ms),
            "MONGO_URI": self.mongo_uri,
            "MONGO_DB": self.mongo_db,
            "REDIS_URL": self.redis_url,
            "QDRANT_COLLECTION": self.qdrant_collection,
            "ANALYTICS_DB_URI": self.analytics_db_uri,
            "EMBEDDING_DIM": str(self.embedding_dim),
            "ETL_TIME_GAP_S": str(self.etl_time_gap_s),
            "VECTOR_REAL_THRESHOLD": str(self.vector_real_threshold),
            "MAX_RECORD_BYTES": str(self.max_record_bytes),
            "DEAD_LETTER_PREFIX_BYTES": str(self.dead_letter_prefix_bytes),
            "DLQ_MAX_BAD_RATIO": str(self.dlq_max_bad_ratio),
            "DLQ_WINDOW": str(self.dlq_window),
            "MAX_BUFFERED_RECORDS": str(self.max_buffered_records),
            "WRITE_CONCURRENCY": str(self.write_concurrency),
            "METRICS_PORT": str(self.metrics_port),
            "SHUTDOWN_TIMEOUT_S": str(self.shutdown_timeout_s),
            "TOPIC_PARTITIONS": str(self.topic_partitions),
            "STACK_DIR": str(self.stack_dir),
            "KAFKA_PORT": str(self.kafka_port),
            "MONGO_PORT": str(self.mongo_port),
            "REDIS_PORT": str(self.redis_port),
            "POSTGRES_PORT": str(self.postgres_port),
            "AIRFLOW_PORT": str(self.airflow_port),
            "AIRFLOW_METADATA_DB": self.airflow_metadata_db,
            "ANALYTICS_READER_URI": self.analytics_reader_uri,
            "AIRFLOW_URL": self.airflow_url,
            "SUPERSET_PORT": str(self.superset_port),
            "SUPERSET_URL": self.superset_url,
            "SUPERSET_USERNAME": self.superset_username,
            "SUPERSET_METADATA_DB": self.superset_metadata_db,
        }
        # Secrets travel only when set explicitly (the local stack keeps its own under STACK_DIR).
        if self.superset_password:
            env["SUPERSET_PASSWORD"] = self.superset_password
        if self.superset_secret_key:
            env["SUPERSET_SECRET_KEY"] = self.superset_secret_key
        if self.qdrant_api_key:
            env["QDRANT_API_KEY"] = self.qdrant_api_key
        if self.qdrant_url:
            env["QDRANT_URL"] = self.qdrant_url
        if self.qdrant_path:
            env["QDRANT_PATH"] = self.qdrant_path
        return env

    def describe(self) -> dict[str, object]:
        """Settings as printable pairs (URIs are shown without passwords)."""
        from sentencify.redact import redact_uri

        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("superset_password", "superset_secret_key", "qdrant_api_key") and value:
                value = "***"
            out[f.name] = redact_uri(value) if isinstance(value, str) and "://" in value else value
        return out

"""The Airflow connections the chain reaches its stores through, and the store settings they imply.

Inside Airflow every store comes from a connection (a secrets backend can hold them, task logs mask
their passwords); a connection that is not defined is an error naming its id, never a silent
fallback to environment variables (those stay for the CLI, `sentencify run`). The MongoDB database
is the Mongo connection's schema ("Default DB"); Qdrant is a server (host, port, password = API
key) or, for the local stack, local mode: extra `{"path": "/dir"}`, which QdrantHook cannot express.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from airflow.exceptions import AirflowNotFoundException
from airflow.sdk import BaseHook

from sentencify.errors import ConfigurationError
from sentencify.settings import Settings


@dataclass(frozen=True)
class ConnIds:
    """Which connection each store is read from (the operators' `*_conn_id` arguments)."""

    mongo: str = "mongo_default"
    redis: str = "redis_default"
    qdrant: str = "qdrant_default"
    analytics: str = "sentencify_analytics"


DEFAULT_IDS = ConnIds()


class MissingConnection(ConfigurationError, AirflowNotFoundException):
    """A connection the chain needs is not defined (or is misnamed)."""

    named = True


def get(conn_id: str, store: str):
    """The Connection `conn_id`; raises MissingConnection naming it and what it is for."""
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise MissingConnection(
            f"Airflow connection {conn_id!r} ({store}) is not defined: add it (Admin > Connections, "
            f"AIRFLOW_CONN_{conn_id.upper()}, or the secrets backend), or pass the operator another conn id"
        ) from None


def mongo_database(conn_id: str, override: str | None = None) -> str:
    """The operator's `mongo_db`, else the connection's schema; raises MissingConnection / ValueError."""
    if override:
        return override
    schema = get(conn_id, "MongoDB").schema
    if not schema:
        raise ValueError(f"Airflow connection {conn_id!r} names no database: set its schema (Default DB), e.g. sentencify")
    return schema


def qdrant_local_path(conn) -> str | None:
    """The local-mode directory of a Qdrant connection (extra `path`), else None (a server)."""
    return (conn.extra_dejson or {}).get("path") or None


def _netloc(conn, default_port: int) -> str:
    return f"{conn.host or '127.0.0.1'}:{conn.port or default_port}"  # no credentials: names only


# The stores each step reaches (besides MongoDB, which every step reads).
STEP_STORES: dict[str, tuple[str, ...]] = {
    "etl": ("mongo",),
    "profile": ("mongo", "redis"),
    "vectors": ("mongo", "qdrant"),
    "views": ("mongo", "redis", "analytics"),
}
_STORE_NAMES = {"mongo": "MongoDB", "redis": "Redis", "qdrant": "Qdrant", "analytics": "analytics PostgreSQL"}


def settings_from_connections(
    settings: Settings, stores: tuple[str, ...], ids: ConnIds = DEFAULT_IDS, mongo_db: str | None = None
) -> Settings:
    """`settings` with the addresses of `stores` ("mongo", "redis", "qdrant", "analytics") taken from
    their connections, without credentials: what lineage names and asset URIs are made of (the clients
    themselves come from the hooks). Raises MissingConnection naming a connection that is not defined."""
    changes: dict[str, Any] = {}
    if "mongo" in stores:
        mongo = get(ids.mongo, "MongoDB")
        changes.update(mongo_uri=f"mongodb://{_netloc(mongo, 27017)}", mongo_db=mongo_database(ids.mongo, mongo_db))
    if "redis" in stores:
        redis = get(ids.redis, "Redis")
        changes["redis_url"] = f"redis://{_netloc(redis, 6379)}/{(redis.extra_dejson or {}).get('db', 0)}"
    if "qdrant" in stores:
        qdrant = get(ids.qdrant, "Qdrant")
        path = qdrant_local_path(qdrant)
        scheme = "https" if (qdrant.extra_dejson or {}).get("https") else "http"
        changes.update(qdrant_url=None if path else f"{scheme}://{_netloc(qdrant, 6333)}", qdrant_path=path)
    if "analytics" in stores:
        analytics = get(ids.analytics, "analytics PostgreSQL")
        changes["analytics_db_uri"] = f"postgresql://{_netloc(analytics, 5432)}/{analytics.schema or 'postgres'}"
    return dataclasses.replace(settings, **changes)

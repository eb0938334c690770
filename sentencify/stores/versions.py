"""The server versions the chain needs, checked once per process when a step opens each store.

Why each minimum (docs/operations.md, "Server versions"):
- MongoDB 5.2: the ETL's join uses the `$top` accumulator (added in 5.2); an older server answers
  every ETL run with "Unrecognized accumulator operator: $top". Read from `buildInfo` (the local
  MongoDB-protocol server answers it too).
- PostgreSQL 10: the SQL needs 9.6 (`alter table ... add column if not exists`, `on conflict`,
  jsonb, `percentile_cont`, pg_blocking_pids), and psycopg 3 (Airflow's hook) supports 10 and later.
  Read from the connection (no round trip).
- Redis 4.0: HSET of several fields (the consumers' lag reports) and Lua scripts (the fenced SET).
  Read from `INFO server`.
- Qdrant 1.12: the facet API (points per category). Read from the server's root; local mode has
  no server version and is not checked.
A server below its minimum stops the run at start with one line naming it and what to do.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from sentencify.errors import ServiceError

MINIMUM: dict[str, tuple[tuple[int, ...], str]] = {
    "MongoDB": ((5, 2), "the ETL's join uses $top"),
    "PostgreSQL": ((10,), "the views' SQL and psycopg 3"),
    "Redis": ((4, 0), "HSET of several fields and Lua scripts"),
    "Qdrant": ((1, 12), "the facet API"),
}

_checked: dict[str, tuple[int, ...]] = {}  # store -> the version found, once per process
_lock = threading.Lock()


class UnsupportedServer(ServiceError, RuntimeError):
    """A store's server is older than the chain needs (MINIMUM)."""


def parse(version: str) -> tuple[int, ...]:
    """The leading numbers of a version text: "8.2.11" -> (8, 2, 11), "15.4 (Debian 15.4-1)" ->
    (15, 4), "1.12.0-dev" -> (1, 12, 0). Raises ValueError when it starts with no number."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if not match:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def postgres_version(server_version: int) -> tuple[int, ...]:
    """libpq's integer form: 150004 -> (15, 4); before 10, 90605 -> (9, 6, 5)."""
    if server_version >= 100000:
        return (server_version // 10000, server_version % 10000)
    return (server_version // 10000, server_version // 100 % 100, server_version % 100)


def require(store: str, version: tuple[int, ...]) -> None:
    """Raise UnsupportedServer when `version` is below the store's minimum (tuples compare by
    part, a missing part counting as 0: (5, 2) meets (5, 2, 0))."""
    minimum, why = MINIMUM[store]
    width = max(len(version), len(minimum))
    if version + (0,) * (width - len(version)) < minimum + (0,) * (width - len(minimum)):
        shown, needed = ".".join(map(str, version)), ".".join(map(str, minimum))
        raise UnsupportedServer(f"{store} {shown} is too old: sentencify needs {store} {needed} or later ({why}); upgrade it")


def check_once(store: str, read: Callable[[], tuple[int, ...]]) -> None:
    """`require(store, read())` the first time this process asks about `store`; later calls cost
    nothing (a version does not change under a running process; a refused one is asked again)."""
    if store in _checked:
        return
    version = read()
    require(store, version)
    with _lock:
        _checked[store] = version


def check_mongodb(db) -> None:
    check_once("MongoDB", lambda: parse(str(db.client.admin.command("buildInfo")["version"])))


def check_postgres(conn) -> None:
    """psycopg2 (`server_version`) or psycopg 3 (`info.server_version`); no round trip."""
    info = getattr(conn, "info", None)
    number = getattr(info, "server_version", None) or conn.server_version
    require("PostgreSQL", postgres_version(int(number)))


def check_redis(client) -> None:
    check_once("Redis", lambda: parse(str(client.info("server")["redis_version"])))


def check_qdrant(client) -> None:
    """A Qdrant server's version; local mode (no server) is not checked."""
    from qdrant_client.local.qdrant_local import QdrantLocal

    inner = getattr(client, "_client", None)
    if isinstance(inner, QdrantLocal):
        return
    check_once("Qdrant", lambda: parse(str(client.info().version)))

"""Airflow for the local stack: its environment, first-time setup, and its three processes."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

from sentencify.settings import PROJECT_ROOT, Settings
from sentencify.stack.postgres import ensure_stack_database
from sentencify.stack.process import stored_secret, write_private

ADMIN_USER = "admin"


def airflow_home(settings: Settings) -> Path:
    return settings.stack_dir / "airflow"


def admin_password_file(settings: Settings) -> Path:
    return airflow_home(settings) / "admin_password"


def admin_password(settings: Settings) -> str:
    home = airflow_home(settings)
    pw = stored_secret(admin_password_file(settings), lambda: secrets.token_urlsafe(12))
    write_private(home / "simple_auth_manager_passwords.json", json.dumps({ADMIN_USER: pw}))
    return pw


def airflow_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of every Airflow process: config, the Mongo connection, and the project's settings."""
    home = airflow_home(settings)
    api = f"http://127.0.0.1:{settings.airflow_port}"
    env = dict(base or {})
    env.update(settings.to_env())
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",  # the local chain runs by itself
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or metadata_uri(settings),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": stored_secret(home / "jwt_secret", lambda: secrets.token_urlsafe(32)),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "simple_auth_manager_passwords.json"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        }
    )
    env.update(connections(settings))
    return env


def connections(settings: Settings) -> dict[str, str]:
    """The Airflow connections the operators' hooks read, from the settings (JSON form).

    Qdrant in local mode (QDRANT_PATH) has no provider form: its connection carries extra `path`
    (sentencify_airflow.connections); the operators use no environment fallback."""
    from urllib.parse import parse_qs, unquote, urlsplit

    def conn(conn_type: str, uri: str, **extra) -> str:
        u = urlsplit(uri)
        return json.dumps(
            {
                "conn_type": conn_type,
                "host": u.hostname,
                "port": u.port,
                "login": unquote(u.username) if u.username else None,  # the URI's %-escapes are not the login's
                "password": unquote(u.password) if u.password else None,
                "schema": u.path.lstrip("/") or None,
                "extra": {k: v for k, v in extra.items() if v is not None},
            }
        )

    mongo = urlsplit(settings.mongo_uri)
    mongo_extra: dict[str, str | bool] = {k: v[-1] for k, v in parse_qs(mongo.query).items()}
    if mongo.scheme == "mongodb+srv":
        mongo_extra["srv"] = True
    # TLS travels as each hook's extras: RedisHook's ssl_* (from a rediss:// URL, certificate and host
    # name checked), PostgresHook's libpq parameters (sslmode, sslrootcert) from the URI's query.
    redis = urlsplit(settings.redis_url)
    redis_extra: dict[str, object] = {"db": int(redis.path.lstrip("/") or 0)}
    if redis.scheme == "rediss":
        query = {k: v[-1] for k, v in parse_qs(redis.query).items()}
        redis_extra.update(ssl=True, ssl_cert_reqs=query.get("ssl_cert_reqs", "required"), ssl_check_hostname=True)
        redis_extra.update({k: v for k, v in query.items() if k in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")})
    pg_extra = {k: v[-1] for k, v in parse_qs(urlsplit(settings.analytics_db_uri).query).items()}
    out = {
        "AIRFLOW_CONN_MONGO_DEFAULT": conn("mongo", f"{mongo.scheme}://{mongo.netloc}/{settings.mongo_db}", **mongo_extra),
        "AIRFLOW_CONN_REDIS_DEFAULT": conn("redis", settings.redis_url, **redis_extra),
        "AIRFLOW_CONN_SENTENCIFY_ANALYTICS": conn("postgres", settings.analytics_db_uri, **pg_extra),
    }
    if not settings.qdrant_url:
        out["AIRFLOW_CONN_QDRANT_DEFAULT"] = json.dumps({"conn_type": "qdrant", "extra": {"path": settings.qdrant_path}})
    else:
        u = urlsplit(settings.qdrant_url)
        out["AIRFLOW_CONN_QDRANT_DEFAULT"] = json.dumps(
            {
                "conn_type": "qdrant",
                "host": u.hostname,
                "port": u.port or (443 if u.scheme == "https" else 6333),
                "password": settings.qdrant_api_key,
                "extra": {"https": u.scheme == "https"},
            }
        )
    return out


def metadata_uri(settings: Settings) -> str:
    """The stack's PostgreSQL (local: trust auth on 127.0.0.1), database AIRFLOW_METADATA_DB."""
    return f"postgresql+psycopg2://sentencify@127.0.0.1:{settings.postgres_port}/{settings.airflow_metadata_db}"


def airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def migrate(settings: Settings) -> None:
    """Create or upgrade the metadata database (idempotent)."""

    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    admin_password(settings)
    if metadata_uri(settings) == airflow_env(settings)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]:
        ensure_stack_database(settings, settings.airflow_metadata_db, needed_by="Airflow")
    out = subprocess.run(
        [airflow_bin(), "db", "migrate"], env=airflow_env(settings), capture_output=True, text=True, timeout=600, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{out.stderr[-3000:]}")


def _health(settings: Settings) -> dict:
    import urllib.request

    url = f"http://127.0.0.1:{settings.airflow_port}/api/v2/monitor/health"
    with urllib.request.urlopen(url, timeout=3) as resp:
        return json.loads(resp.read())


def component_healthy(settings: Settings, component: str) -> bool:
    return _health(settings).get(component, {}).get("status") == "healthy"

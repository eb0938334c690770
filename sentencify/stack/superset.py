"""Superset for the local stack: its own virtualenv, environment, first-time setup and web server.

Superset pins libraries Airflow cannot share (Flask, SQLAlchemy 1.4), so it lives in
`.venv-superset` (`make install` creates it) and is only ever talked to over HTTP.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from sentencify.settings import PROJECT_ROOT, Settings
from sentencify.stack.postgres import ensure_stack_database
from sentencify.stack.process import StackError, stored_secret

SUPERSET_VENV = Path(os.environ.get("SUPERSET_VENV", PROJECT_ROOT / ".venv-superset"))
CONFIG_FILE = PROJECT_ROOT / "superset" / "superset_config.py"
# Bump when the first-time setup changes, so existing stacks run it again.
SETUP_VERSION = "1"


def superset_home(settings: Settings) -> Path:
    return settings.stack_dir / "superset"


def superset_bin(name: str = "superset") -> str:
    path = SUPERSET_VENV / "bin" / name
    if not path.exists():
        raise StackError(
            f"Superset is not installed ({path} missing): run `make install` "
            "(it creates .venv-superset with apache-superset 6.1.0)"
        )
    return str(path)


def admin_password_file(settings: Settings) -> Path:
    """Where the local stack keeps the admin password it generated."""
    return superset_home(settings) / "admin_password"


def admin_password(settings: Settings) -> str:
    """SUPERSET_PASSWORD when set, else one generated once for this stack."""
    return settings.superset_password or stored_secret(admin_password_file(settings), lambda: secrets.token_urlsafe(12))


def secret_key(settings: Settings) -> str:
    return settings.superset_secret_key or stored_secret(
        superset_home(settings) / "secret_key", lambda: secrets.token_urlsafe(42)
    )


def metadata_uri(settings: Settings) -> str:
    return f"postgresql://sentencify@127.0.0.1:{settings.postgres_port}/{settings.superset_metadata_db}"


def superset_env(settings: Settings) -> dict[str, str]:
    home = superset_home(settings)
    return {
        "SUPERSET_CONFIG_PATH": str(CONFIG_FILE),
        "SUPERSET_HOME": str(home),
        "SUPERSET_SECRET_KEY": secret_key(settings),
        "SUPERSET_METADATA_URI": metadata_uri(settings),
        "SUPERSET_CACHE_REDIS_URL": settings.redis_url.rsplit("/", 1)[0] + "/1",  # db 1: apart from profiles
        "FLASK_APP": "superset",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{SUPERSET_VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
    }


def setup(settings: Settings) -> None:
    """Metadata schema, roles and the admin user (idempotent; skipped once done for this version)."""

    home = superset_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    stamp = home / f".setup-{SETUP_VERSION}"
    if stamp.exists():
        return
    ensure_stack_database(settings, settings.superset_metadata_db, needed_by="Superset")
    env = superset_env(settings)
    admin = [
        "fab",
        "create-admin",
        "--username",
        settings.superset_username,
        "--firstname",
        "Sentencify",
        "--lastname",
        "Admin",
        "--email",
        "admin@localhost",
        "--password",
        admin_password(settings),
    ]
    # create-admin leaves an existing user alone: reset-password makes the login the one printed.
    reset = ["fab", "reset-password", "--username", settings.superset_username, "--password", admin_password(settings)]
    log = home.parent / "logs" / "superset-setup.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for argv in (["db", "upgrade"], admin, reset, ["init"]):
        with open(log, "ab") as out:
            done = subprocess.run(
                [superset_bin(), *argv], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900, check=False
            )
        if done.returncode != 0:
            raise StackError(f"`superset {argv[0]} {argv[1] if len(argv) > 1 else ''}` failed; see {log}")
    stamp.touch()


def server_argv(settings: Settings) -> list[str]:
    # Threads serve a dashboard's parallel chart requests; two workers keep one slow query from blocking the UI.
    return [
        superset_bin("gunicorn"),
        "--workers",
        "2",
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--timeout",
        "120",
        "--bind",
        f"127.0.0.1:{settings.superset_port}",
        # gunicorn's own bounds (its maximum request line; headers up to 16 KB): Superset 6 sends
        # chart state by key, not in the URL, so nothing legitimate comes near them.
        "--limit-request-line",
        "8190",
        "--limit-request-fields",
        "100",
        "--limit-request-field_size",
        "16384",
        "superset.app:create_app()",
    ]


def healthy(settings: Settings) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{settings.superset_port}/health", timeout=3) as resp:
        return resp.read().strip() == b"OK"

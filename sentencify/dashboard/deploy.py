"""`sentencify dashboard deploy`: push the bundle to a running Superset over its REST API.

Three imports, each with overwrite, so a re-deploy updates everything in place and never
duplicates (Superset matches every object by its fixed UUID): the database (its URI may have
changed), the datasets (columns and metrics), then charts and dashboard. A dashboard import
alone would keep the old database and datasets.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import requests

from sentencify.dashboard.bundle import Bundle, build
from sentencify.errors import ServiceError
from sentencify.settings import Settings


class DeployError(ServiceError, RuntimeError):
    """The bundle could not be deployed; the message says what to check."""


@dataclass
class Deployed:
    dashboard_id: int
    url: str
    charts: int


def superset_password(settings: Settings) -> str:
    """SUPERSET_PASSWORD, else the local stack's generated admin password."""
    if settings.superset_password:
        return settings.superset_password
    from sentencify.stack.superset import admin_password_file

    path = admin_password_file(settings)
    if not path.exists():
        raise DeployError(
            f"no password for Superset at {settings.superset_url}: set SUPERSET_PASSWORD "
            "(or start the local stack, which generates one: `sentencify stack up`)"
        )
    return path.read_text().strip()


def client(settings: Settings):
    from supersetapiclient.client import SupersetClient

    if urllib.parse.urlsplit(settings.superset_url).scheme == "http":
        # requests-oauthlib refuses plain HTTP unless told; use HTTPS for a Superset across a network.
        os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")
    return SupersetClient(host=settings.superset_url, username=settings.superset_username, password=superset_password(settings))


def deploy(settings: Settings, bundle: Bundle | None = None, echo=print) -> Deployed:
    bundle = bundle or build(settings)
    api = client(settings)
    resources = {"database": api.databases, "dataset": api.datasets, "dashboard": api.dashboards}
    with tempfile.TemporaryDirectory(prefix="sentencify-bundle-") as tmp:
        for kind, resource in resources.items():
            path = Path(tmp) / f"sentencify_{kind}.zip"
            path.write_bytes(bundle.zip_bytes(kind))
            try:
                resource.import_file(str(path), overwrite=True, passwords=bundle.passwords)
            except requests.ConnectionError:
                raise DeployError(
                    f"Superset is not reachable at {settings.superset_url}: is it up "
                    "(`sentencify stack status`), or is SUPERSET_URL wrong?"
                ) from None
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else "?"
                hint = " (check SUPERSET_USERNAME / SUPERSET_PASSWORD)" if status == 401 else ""
                raise DeployError(f"Superset refused the {kind} import (HTTP {status}){hint}: {exc}") from None
            echo(f"  imported {kind} bundle ({len(bundle.files(kind))} files)")
    slug = bundle.dashboard.get("slug") or bundle.dashboard["uuid"]
    found = api.get(api.join_urls(api.base_url, "dashboard", slug))
    if found.status_code != 200:
        raise DeployError(f"the dashboard {slug!r} is not in Superset after the import (HTTP {found.status_code})")
    result = found.json()["result"]
    return Deployed(result["id"], api.join_urls(settings.superset_url, result["url"]), len(bundle.charts))

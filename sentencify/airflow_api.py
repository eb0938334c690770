"""A small client of Airflow's REST API (v2): log in, unpause, trigger, and follow DAG runs.

Used by `make demo` to run the chain for past hours through the running scheduler, and by the
end-to-end test. Standard library only, so it works from any environment.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

from sentencify.errors import ServiceError


class AirflowApiError(ServiceError, RuntimeError):
    """Airflow's REST API refused a call or answered with an error."""


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30) -> None:
        self.base = base_url.rstrip("/")
        self.username, self.password = username, password
        self.timeout = timeout
        self._token: str | None = None

    def _call(self, method: str, path: str, body: dict | None = None, auth: bool = True):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(4):
            req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                break
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:500].decode(errors="replace")
                if exc.code >= 500 and attempt < 3:  # transient server trouble: try again shortly
                    time.sleep(1 + attempt)
                    continue
                raise AirflowApiError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
            except urllib.error.URLError as exc:
                raise AirflowApiError(
                    f"{method} {path}: Airflow is not reachable at {self.base} ({exc.reason}); "
                    "is it up? (`sentencify stack status`)"
                ) from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        if self._token is None:
            out = self._call("POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False)
            self._token = out["access_token"]
        return self._token

    def dag(self, dag_id: str) -> dict:
        return self._call("GET", f"/api/v2/dags/{dag_id}")

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180) -> None:
        """Until the dag-processor has parsed them."""
        deadline = time.monotonic() + timeout
        missing = list(dag_ids)
        while time.monotonic() < deadline:
            missing = []
            for d in dag_ids:
                try:
                    self.dag(d)
                except AirflowApiError:
                    missing.append(d)
            if not missing:
                return
            time.sleep(2)
        raise AirflowApiError(f"DAGs not parsed after {timeout:.0f}s: {missing} (see the dag-processor log)")

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, logical_date: datetime | None, conf: dict | None = None, run_id: str | None = None) -> dict:
        """A manual run; `logical_date=None` is a run with no logical date (it covers no window)."""
        body = {"logical_date": None if logical_date is None else logical_date.isoformat(), "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def runs(self, dag_id: str, limit: int = 100) -> list[dict]:
        q = urllib.parse.urlencode({"limit": limit, "order_by": "-run_after"})
        return self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns?{q}")["dag_runs"]

    def run_at(self, dag_id: str, logical_date: datetime) -> dict | None:
        """The run of `dag_id` for exactly this logical date, if any (there is at most one)."""
        q = urllib.parse.urlencode({"logical_date_gte": logical_date.isoformat(), "logical_date_lte": logical_date.isoformat()})
        runs = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns?{q}")["dag_runs"]
        return runs[0] if runs else None

    def clear(self, dag_id: str, run_id: str) -> None:
        """Run an existing DAG run again (all its tasks)."""
        self._call(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/clear",
            {"dry_run": False, "only_failed": False},
        )

    def trigger_or_rerun(self, dag_id: str, logical_date: datetime, run_id: str) -> str:
        """A new run for this logical date, or the existing one cleared (Airflow keeps one run per
        logical date); returns the run id."""
        existing = self.run_at(dag_id, logical_date)
        if existing is None:
            self.trigger(dag_id, logical_date, run_id=run_id)
            return run_id
        self.clear(dag_id, existing["dag_run_id"])
        return existing["dag_run_id"]

    def asset_id(self, uri: str) -> int:
        """The id of the asset with exactly this URI; AirflowApiError when there is none."""
        q = urllib.parse.urlencode({"uri_pattern": uri, "limit": 100})
        for asset in self._call("GET", f"/api/v2/assets?{q}")["assets"]:
            if asset["uri"] == uri:
                return asset["id"]
        raise AirflowApiError(f"no asset with URI {uri} (has the dag-processor parsed the DAGs?)")

    def create_asset_event(self, uri: str, extra: dict | None = None) -> dict:
        """An asset event made by hand (as the UI's 'Create Asset Event'): it triggers the DAGs scheduled on it."""
        return self._call("POST", "/api/v2/assets/events", {"asset_id": self.asset_id(uri), "extra": extra or {}})

    def task_log(self, dag_id: str, run_id: str) -> str:
        """The log of every try of every task of a run, as text (for an error message)."""
        run = urllib.parse.quote(run_id, safe="")
        out = []
        for ti in self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run}/taskInstances")["task_instances"]:
            for attempt in range(1, (ti.get("try_number") or 1) + 1):
                path = f"/api/v2/dags/{dag_id}/dagRuns/{run}/taskInstances/{ti['task_id']}/logs/{attempt}?full_content=true"
                content = self._call("GET", path).get("content") or []
                lines = [f"{c.get('event', '')} {c.get('error_detail', '')}" if isinstance(c, dict) else str(c) for c in content]
                out.append(f"--- {ti['task_id']} try {attempt}\n" + "\n".join(lines))
        return "\n".join(out)

    def plugins(self) -> list[dict]:
        return self._call("GET", "/api/v2/plugins")["plugins"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

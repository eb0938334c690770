"""Run the chain for every hour of the demo's day through the running Airflow scheduler (`make demo`).

Each hour is a manual run of `sentencify_etl` (so the runs fill the UI's grid); profiles,
vectors and views follow through their assets. Windows are by *ingestion* time: the day the
demo just simulated was ingested in the current hour, so that hour's run does the work and the
earlier hours find nothing new. The dashboard buckets by *event* time, so it shows the whole day.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta

from sentencify import mongo
from sentencify.airflow_api import AirflowApi, AirflowApiError
from sentencify.settings import Settings
from sentencify.stack.airflow import ADMIN_USER, admin_password
from sentencify.steps.runner import REGISTRY, STEPS
from sentencify.window import floor_hour

DAGS = [REGISTRY[s].dag_id for s in STEPS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=int, default=24, help="past hours to run, besides the current one")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the whole chain")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    api = AirflowApi(f"http://127.0.0.1:{settings.airflow_port}", ADMIN_USER, admin_password(settings))
    api.wait_for_dags(DAGS)
    for dag in DAGS:
        api.unpause(dag)
    current = floor_hour(datetime.now(UTC))
    starts = [current - timedelta(hours=h) for h in range(args.hours, -1, -1)]
    stamp = int(time.time())
    began_at = datetime.now(UTC) - timedelta(seconds=1)
    rerun = 0
    for start in starts:
        run_id = api.trigger_or_rerun("sentencify_etl", start, run_id=f"demo__{start:%Y%m%dT%H%M}__{stamp}")
        rerun += not run_id.startswith("demo__") or not run_id.endswith(str(stamp))
    print(
        f"sentencify_etl for {len(starts)} hours: {len(starts) - rerun} new runs, {rerun} existing run(s) cleared to run again; "
        f"{starts[0]:%Y-%m-%d %H:%M} .. {starts[-1]:%Y-%m-%d %H:%M} UTC; profile, vectors and views follow by asset"
    )
    client = mongo.client(settings.mongo_uri)
    runs = client[settings.mongo_db].pipeline_runs
    began, last_line = time.monotonic(), ""
    try:
        while time.monotonic() - began < args.timeout:
            done: dict[str, set] = {step: set() for step in STEPS}
            for r in runs.find(
                {"finished_at": {"$gte": began_at}, "window_start": {"$in": starts}}, {"step": 1, "window_start": 1}
            ):
                if r["step"] in done:
                    done[r["step"]].add(r["window_start"])
            line = "  chain: " + "  ".join(f"{step} {len(done[step]):>2}/{len(starts)}" for step in STEPS)
            if line != last_line:
                print(f"{line}   ({time.monotonic() - began:4.0f}s)", flush=True)
                last_line = line
            if all(len(d) == len(starts) for d in done.values()):
                summary = (runs.find_one({"_id": f"etl:{current.isoformat()}"}) or {}).get("summary")
                print(f"  the current hour's ETL: {summary}")
                return 0
            failed = _failed(api, began_at)
            if failed:
                print(f"chain failed: {failed}; open http://127.0.0.1:{settings.airflow_port} for the task logs", file=sys.stderr)
                return 1
            time.sleep(3)
    finally:
        client.close()
    print(f"the chain did not finish in {args.timeout:.0f}s ({last_line.strip()}); see the Airflow UI", file=sys.stderr)
    return 1


def _failed(api: AirflowApi, since: datetime) -> list[str]:
    """This demo's failed runs (retries exhausted), in any of the four DAGs."""
    out = []
    for dag in DAGS:
        try:
            recent = api.runs(dag, limit=50)
        except AirflowApiError:  # a busy api-server: look again at the next poll
            continue
        out += [
            f"{dag} {r['dag_run_id']}"
            for r in recent
            if r["state"] == "failed" and datetime.fromisoformat(r["run_after"]) >= since
        ]
    return out


if __name__ == "__main__":
    sys.exit(main())

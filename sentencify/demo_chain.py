"""Run the chain for the current hour through the running Airflow scheduler and wait for it (`make demo`).

Records are windowed by *ingestion* time, so everything the demo just ingested is in this hour.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone

from sentencify import mongo
from sentencify.airflow_api import AirflowApi
from sentencify.settings import Settings
from sentencify.stack.airflow import ADMIN_USER, admin_password
from sentencify.window import Window

DAGS = ["sentencify_etl", "sentencify_profile", "sentencify_vectors"]


def main() -> int:
    settings = Settings.from_env()
    api = AirflowApi(f"http://127.0.0.1:{settings.airflow_port}", ADMIN_USER, admin_password(settings))
    api.wait_for_dags(DAGS)
    for dag in DAGS:
        api.unpause(dag)
    window = Window.hour_containing(datetime.now(timezone.utc))
    run_id = f"demo__{window.start:%Y%m%dT%H%M}__{int(time.time())}"
    api.trigger("sentencify_etl", window.start, run_id=run_id)
    print(f"triggered sentencify_etl for {window} (run {run_id}); profiles and vectors follow by asset")
    client = mongo.client(settings.mongo_uri)
    runs = client[settings.mongo_db].pipeline_runs
    began, seen = time.monotonic(), set()
    try:
        while time.monotonic() - began < 900:
            if api.run("sentencify_etl", run_id)["state"] == "failed":
                print("sentencify_etl failed: see its task log in the Airflow UI", file=sys.stderr)
                return 1
            for step in ("etl", "profile", "vectors"):
                doc = runs.find_one({"_id": f"{step}:{window.start.isoformat()}", "finished_at": {"$gte": _started(began)}})
                if doc and step not in seen:
                    seen.add(step)
                    print(f"  {step:<8} done after {time.monotonic() - began:5.0f}s: {doc['summary']}")
            if len(seen) == 3:
                return 0
            time.sleep(3)
    finally:
        client.close()
    print(f"the chain did not finish in 15 minutes (done: {sorted(seen)}); see the Airflow UI", file=sys.stderr)
    return 1


def _started(monotonic_began: float) -> datetime:
    return datetime.fromtimestamp(time.time() - (time.monotonic() - monotonic_began) - 1, tz=timezone.utc)


if __name__ == "__main__":
    sys.exit(main())

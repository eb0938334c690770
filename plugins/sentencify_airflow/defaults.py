"""What every Sentencify DAG shares: owner, retries with backoff, the optional window params."""

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)

DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}

WINDOW_PARAMS = {
    "start": Param(None, type=["null", "string"], description="Window start (ISO-8601). Empty: the run's hour."),
    "end": Param(None, type=["null", "string"], description="Window end, exclusive (ISO-8601)."),
}

# Rendered into the operators: empty when the param is not given.
START = "{{ params.start or '' }}"
END = "{{ params.end or '' }}"

TAGS = ["sentencify", "phase2"]

# Asset-triggered steps are not capped at one run: with max_active_runs=1, Airflow 3.x leaves asset
# events that arrive during a run unconsumed until another event comes (apache/airflow#56050).
# Runs of one step still go one at a time: the step's lease in MongoDB serializes them, and each
# run reads everything its step has not yet processed (sentencify.steps.progress), so no hour is missed.
ASSET_TRIGGERED_MAX_RUNS = 16

"""What every Sentencify DAG shares: owner, retries with backoff, the optional window params."""

from datetime import datetime, timedelta, timezone

from airflow.sdk import Param

START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)

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

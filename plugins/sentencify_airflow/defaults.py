"""What every Sentencify DAG shares: owner, retries with backoff, the optional window params, deadlines."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import DeadlineAlert, DeadlineReference, Param, SyncCallback  # type: ignore[attr-defined]  # lazy exports

from sentencify.settings import Settings
from sentencify_airflow.deadlines import deadline_missed

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)

DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    # No task runs without bound (pipeline.md "Bounds at any size"): past it Airflow fails the
    # task, which releases its lease, and the retry redoes the work.
    "execution_timeout": timedelta(seconds=Settings.from_env().task_execution_timeout_s),
}

WINDOW_PARAMS = {
    "start": Param(None, type=["null", "string"], description="Window start (ISO-8601). Empty: the run's hour."),
    "end": Param(None, type=["null", "string"], description="Window end, exclusive (ISO-8601)."),
    "full": Param(
        False,
        type="boolean",
        description="Full rebuild of this step and, through the assets, of every step after it "
        "(after a rule or threshold change; as `sentencify rebuild --from STEP`).",
    ),
}

# Rendered into the operators: empty when the param is not given.
START = "{{ params.start or '' }}"
END = "{{ params.end or '' }}"
FULL = "{{ params.full }}"

TAGS = ["sentencify", "phase2"]

# Asset-triggered steps are not capped at one run: with max_active_runs=1, Airflow 3.x leaves asset
# events that arrive during a run unconsumed until another event comes (apache/airflow#56050).
# Runs of one step still go one at a time: the step's lease in MongoDB serializes them, and each
# run reads everything its step has not yet processed (sentencify.steps.progress), so no hour is missed.
ASSET_TRIGGERED_MAX_RUNS = 16

# A notifier for missed deadlines: (dotted path of an Airflow notifier class, its keyword arguments),
# e.g. ("airflow.providers.slack.notifications.slack.SlackNotifier", {"channel": "#data", "text": "..."}).
DEADLINE_NOTIFIER: tuple[str, dict] | None = None


def _airflow_dags_test() -> bool:
    return sys.argv[1:3] == ["dags", "test"] and Path(sys.argv[0]).name == "airflow"


def deadline(step: str, *, hourly: bool) -> DeadlineAlert | None:
    """The step's deadline (RUN_DEADLINE_S): the hourly ETL must finish that long after the end of
    the hour it covers (its logical date + 1 h); an asset-triggered step, that long after it was
    queued (its runs have no logical date). Runs with no logical date have no hourly deadline:
    Airflow skips a reference that evaluates to None.

    None under `airflow dags test`: Airflow 3.3's DAG.test() fails a successful run of any DAG
    with a deadline (apache/airflow#73428, fix in PR #73430), and a test run has no deadline to keep."""
    if _airflow_dags_test():
        return None
    allowance = timedelta(seconds=Settings.from_env().run_deadline_s)
    notifier, notifier_kwargs = DEADLINE_NOTIFIER or (None, None)
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE if hourly else DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=1) + allowance if hourly else allowance,
        callback=SyncCallback(deadline_missed, kwargs={"step": step, "notifier": notifier, "notifier_kwargs": notifier_kwargs}),
        name=f"sentencify_{step} late",
    )

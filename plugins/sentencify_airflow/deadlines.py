"""What happens when a step's run misses its deadline (Airflow DeadlineAlert, Airflow 3.1+).

The scheduler marks the run's deadline missed and the executor calls `deadline_missed` once, with
the run (`context["dag_run"]`) and the deadline (`context["deadline"]`). It logs a warning, counts
the metric `sentencify.deadline_missed` (tags: step, dag_id, run_type), and hands the context to a
notifier when one is named: the dotted path of any Airflow notifier class, e.g.
`airflow.providers.slack.notifications.slack.SlackNotifier`, with its keyword arguments
(defaults.py, DEADLINE_NOTIFIER). A run queued after its deadline had already passed (a backfill
or a re-run of an old hour) was never late: it is logged, not counted or notified.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

log = logging.getLogger("sentencify.deadline")


def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def deadline_missed(context: dict, *, step: str, notifier: str | None = None, notifier_kwargs: dict | None = None) -> bool:
    """Log, count and notify one missed deadline; returns whether it alerted (False: queued too late to matter)."""
    run = context.get("dag_run") or {}
    deadline = _when((context.get("deadline") or {}).get("deadline_time"))
    queued = _when(run.get("queued_at"))
    what = {"step": step, "dag_id": run.get("dag_id"), "run_id": run.get("dag_run_id") or run.get("run_id")}
    if deadline is not None and queued is not None and queued >= deadline:
        log.info("run queued after its deadline %s (a backfill or re-run): not alerted %s", deadline, what)
        return False
    log.warning("deadline %s missed: the run has not finished %s", deadline, what)
    from airflow.sdk.observability import stats

    stats.incr(
        "sentencify.deadline_missed", tags={"step": step, "dag_id": str(what["dag_id"]), "run_type": str(run.get("run_type"))}
    )
    if notifier:
        from airflow.sdk._shared.module_loading import import_string

        import_string(notifier)(**(notifier_kwargs or {}))(context)
    return True


def store_drift(context: dict, stores: list[str], notifier: tuple[str, dict] | None = None) -> None:
    """A derived store was found differing from MongoDB (sentencify_verify): log, count the metric
    `sentencify.store_drift` (tag: store) and hand the context to the deadline notifier
    (`notifier`: defaults.DEADLINE_NOTIFIER), so an operator learns of a lost store even when it was
    repaired."""
    from airflow.sdk.observability import stats

    log.warning("derived stores differed from MongoDB: %s", ", ".join(stores))
    for store in stores:
        stats.incr("sentencify.store_drift", tags={"store": store})
    if notifier:
        from airflow.sdk._shared.module_loading import import_string

        path, kwargs = notifier
        import_string(path)(**(kwargs or {}))(context)

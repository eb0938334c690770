"""
### sentencify_verify: every derived store checked against MongoDB, and repaired

Daily. `sentencify verify --repair`: the examples and rejects, the profiles in MongoDB and
Redis, the Qdrant points and the PostgreSQL facts are each compared with what MongoDB's raw
records imply, page by page; a step whose stores differ runs in full (under its lease) and is
checked again. Drift found raises the deadline notifier's alarm and the metric
`sentencify.store_drift`, even when the repair fixed it: a lost store should be known. The task
fails only when a store still differs after the repair.

Run alone: `airflow dags test sentencify_verify 2026-11-24T00:00:00+00:00`.
"""

from datetime import timedelta

from airflow.sdk import DAG

from sentencify_airflow.defaults import DEFAULT_ARGS, START_DATE, TAGS
from sentencify_airflow.operators import VerifyStoresOperator

with DAG(
    dag_id="sentencify_verify",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1},
    tags=TAGS,
    dagrun_timeout=timedelta(hours=6),
    doc_md=__doc__,
):
    VerifyStoresOperator(task_id="verify_and_repair_stores", repair=True)

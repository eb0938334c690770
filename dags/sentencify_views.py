"""
### sentencify_views: aggregates for the dashboard (MongoDB -> PostgreSQL)

Starts when `sentencify_vectors` updates its asset, for the same window(s). Replaces the
window's rows of the fact tables in one PostgreSQL transaction, upserts the touched sessions'
examples, funnel and users, and (re)creates the views in `sql_views/` that Superset reads.

Run alone: `airflow dags test sentencify_views 2026-11-24T05:00:00+00:00`.
"""

from airflow.sdk import DAG

from sentencify_airflow.assets import VECTORS, VIEWS
from sentencify_airflow.defaults import (
    ASSET_TRIGGERED_MAX_RUNS,
    DEFAULT_ARGS,
    END,
    FULL,
    START,
    START_DATE,
    TAGS,
    WINDOW_PARAMS,
    deadline,
)
from sentencify_airflow.operators import AnalyticsViewsOperator

with DAG(
    dag_id="sentencify_views",
    schedule=[VECTORS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=ASSET_TRIGGERED_MAX_RUNS,  # not 1: see defaults.py (events lost at 1)
    default_args=DEFAULT_ARGS,
    params=WINDOW_PARAMS,
    tags=TAGS,
    deadline=deadline("views", hourly=False),
    doc_md=__doc__,
):
    AnalyticsViewsOperator(task_id="export_views", start=START, end=END, full=FULL, outlets=[VIEWS])

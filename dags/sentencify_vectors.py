"""
### sentencify_vectors: vector migration, synthetic -> real (Qdrant)

Starts when `sentencify_profile` updates the profiles asset, for the same window(s). Every
touched session's example that is `high` with an embedding becomes a real point (uuid5 id,
pipeline.md payload); any other loses its point; categories with enough real points lose
their synthetic ones.

Run alone: `airflow dags test sentencify_vectors 2026-11-24T05:00:00+00:00`.
"""

from airflow.sdk import DAG

from sentencify_airflow.assets import USER_PROFILES, VECTORS
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
from sentencify_airflow.operators import VectorMigrationOperator

with DAG(
    dag_id="sentencify_vectors",
    schedule=[USER_PROFILES],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=ASSET_TRIGGERED_MAX_RUNS,  # not 1: see defaults.py (events lost at 1)
    default_args=DEFAULT_ARGS,
    params=WINDOW_PARAMS,
    tags=TAGS,
    deadline=deadline("vectors", hourly=False),
    doc_md=__doc__,
):
    VectorMigrationOperator(task_id="migrate_vectors", start=START, end=END, full=FULL, outlets=[VECTORS])

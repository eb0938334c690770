"""
### sentencify_etl: raw logs -> training examples (H)

Hourly. The run with logical date 05:00 covers sessions *touched* in [05:00, 06:00): any of
their A, B, C, I records, or a D or E they point at, was ingested then. It also reads whatever
no successful ETL run has processed yet: hours without a successful run, and records that became
visible after their hour's run (the step's progress, `pipeline_progress`). Each such session is
rebuilt from **all** its records with the consistency rules of pipeline.md and published in one
transaction into `training_examples` (contradictions and orphans go to `etl_rejects`).

Catchup is off on purpose: an hour the scheduler missed is covered by the next run, which reads
from the step's progress, so one run catches up any number of missed hours instead of one run
per hour re-reading the same records.

Run alone: `airflow dags test sentencify_etl 2026-11-24T05:00:00+00:00`, or trigger with
params `start`/`end` for any window. Updates the asset that starts `sentencify_profile`.
"""

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from sentencify_airflow.assets import TRAINING_EXAMPLES
from sentencify_airflow.defaults import DEFAULT_ARGS, END, FULL, START, START_DATE, TAGS, WINDOW_PARAMS, deadline
from sentencify_airflow.operators import TrainingExamplesOperator

with DAG(
    dag_id="sentencify_etl",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,  # runs share sessions; the step's lease also serializes CLI runs and backfills
    default_args=DEFAULT_ARGS,
    params=WINDOW_PARAMS,
    tags=TAGS,
    deadline=deadline("etl", hourly=True),
    doc_md=__doc__,
):
    TrainingExamplesOperator(task_id="build_training_examples", start=START, end=END, full=FULL, outlets=[TRAINING_EXAMPLES])

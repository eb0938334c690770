"""
### sentencify_profile: user profiles (G), in MongoDB and Redis

Starts when `sentencify_etl` updates the training-examples asset, for the same window(s).
Every user of a touched session is recomputed from all their raw B and C records
(pipeline.md formulas) into `user_profile` and Redis `user_profile:{user_id}`.

Run alone: `airflow dags test sentencify_profile 2026-11-24T05:00:00+00:00` covers the hour
starting at that logical date (or params `start`/`end`).
"""

from airflow.sdk import DAG

from sentencify_airflow.assets import TRAINING_EXAMPLES, USER_PROFILES
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
from sentencify_airflow.operators import RedisRefusalOperator, UserProfilesOperator

with DAG(
    dag_id="sentencify_profile",
    schedule=[TRAINING_EXAMPLES],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=ASSET_TRIGGERED_MAX_RUNS,  # not 1: see defaults.py (events lost at 1)
    default_args=DEFAULT_ARGS,
    params=WINDOW_PARAMS,
    tags=TAGS,
    deadline=deadline("profile", hourly=False),
    doc_md=__doc__,
):
    profiles = UserProfilesOperator(task_id="update_user_profiles", start=START, end=END, full=FULL, outlets=[USER_PROFILES])
    # A Redis out of memory: MongoDB is published and the asset goes on to vectors and views; this fails the run.
    profiles >> RedisRefusalOperator(task_id="redis_accepted_the_profiles", profile_task_id="update_user_profiles")

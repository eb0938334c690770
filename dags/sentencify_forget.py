"""
### sentencify_forget: erase users from every store, and keep them erased

Manual. Trigger with conf `{"user_ids": ["<user id>", ...]}` (the trigger form's `user_ids`):
every raw record of each user as pipeline.md defines it, and everything derived from them
(examples, rejects, quarantine entries, the profile in MongoDB and Redis, Qdrant points,
PostgreSQL rows, dead letters), then the dashboard's hourly facts of the hours that changed. The
users' keyed hashes join the suppression list, so their later records are never stored again.
Same code as `sentencify forget --user ID`. A retry completes a half-done erasure.

The run's conf holds the ids: delete the run afterwards (Browse > DAG Runs) so Airflow's own
database keeps none of them (docs/operations.md, "Erasing a user").
"""

from airflow.sdk import DAG, Param

from sentencify_airflow.defaults import DEFAULT_ARGS, START_DATE, TAGS
from sentencify_airflow.forget import ForgetUsersOperator

with DAG(
    dag_id="sentencify_forget",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "user_ids": Param(
            [], type="array", items={"type": "string", "minLength": 1}, description="The ids of the users to erase."
        )
    },
    tags=TAGS,
    doc_md=__doc__,
):
    ForgetUsersOperator(task_id="forget_users")

"""The Assets that chain the DAGs: each step's output, updated once the step's window is published.

URIs name the configured stores and database (sentencify_airflow.lineage), in the form each
provider validates.
"""

from airflow.sdk import Asset

from sentencify.settings import Settings
from sentencify_airflow.lineage import asset_uri

_settings = Settings.from_env()

TRAINING_EXAMPLES = Asset(name="sentencify_training_examples", uri=asset_uri("training_examples", _settings), group="sentencify")
USER_PROFILES = Asset(name="sentencify_user_profiles", uri=asset_uri("user_profile", _settings), group="sentencify")
VECTORS = Asset(name="sentencify_vectors", uri=asset_uri("vectors", _settings), group="sentencify")
VIEWS = Asset(name="sentencify_views", uri=asset_uri("views", _settings), group="sentencify")

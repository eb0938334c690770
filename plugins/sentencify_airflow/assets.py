"""The Assets that chain the DAGs: each step's output, updated once the step's window is published.

URIs name the configured stores and database (sentencify_airflow.lineage), in the form each
provider validates. The name is the URI: pointing the chain at another database makes new assets
rather than clashing with the old ones' names.
"""

from airflow.sdk import Asset

from sentencify.settings import Settings
from sentencify_airflow.lineage import asset_uri

_settings = Settings.from_env()

TRAINING_EXAMPLES = Asset(asset_uri("training_examples", _settings), group="sentencify")
USER_PROFILES = Asset(asset_uri("user_profile", _settings), group="sentencify")
VECTORS = Asset(asset_uri("vectors", _settings), group="sentencify")
VIEWS = Asset(asset_uri("views", _settings), group="sentencify")

"""The Assets that chain the DAGs: each step's output, updated once the step's window is published.

URIs name the data (hosts are the production service names), in the form each provider validates.
"""

from airflow.sdk import Asset

TRAINING_EXAMPLES = Asset("mongodb://mongo:27017/sentencify/training_examples", group="sentencify")
USER_PROFILES = Asset("mongodb://mongo:27017/sentencify/user_profile", group="sentencify")
VECTORS = Asset("qdrant://qdrant:6333/context_block_v1", group="sentencify")
VIEWS = Asset("postgres://postgres:5432/analytics/public/sentencify_views", group="sentencify")

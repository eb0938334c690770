"""A link in the Airflow UI's Browse menu to the Superset dashboard (the dashboard links back)."""

from airflow.plugins_manager import AirflowPlugin

from sentencify.dashboard import dashboard_url
from sentencify.settings import Settings


class SentencifyDashboardLink(AirflowPlugin):
    name = "sentencify_dashboard_link"
    external_views = [  # noqa: RUF012 (AirflowPlugin declares it an instance variable)
        {
            "name": "Sentencify dashboard",
            "href": dashboard_url(Settings.from_env()),
            "destination": "nav",
            "category": "browse",
        }
    ]

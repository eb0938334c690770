"""The Superset dashboard as code: build the import bundle from `superset/dashboard/`, deploy it over REST."""

from sentencify.settings import Settings

# Fixed in superset/dashboard/dashboards/*.yaml too (a test checks they agree): links use it.
DASHBOARD_SLUG = "sentencify-phase-2"
DASHBOARD_PATH = f"/superset/dashboard/{DASHBOARD_SLUG}/"


def dashboard_url(settings: Settings) -> str:
    return settings.superset_url + DASHBOARD_PATH

"""The Superset dashboard as code: build the import bundle from `superset/dashboard/`, deploy it over REST."""

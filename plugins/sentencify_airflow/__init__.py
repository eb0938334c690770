"""Airflow operators and hooks of the Sentencify chain: thin wrappers over the core package `sentencify`."""

"""Core package of the Sentencify Phase 2 data platform: schemas, settings and step logic.

Knows nothing of Airflow: the DAGs and operators in dags/ and plugins/ call into it,
and so do the consumer and the `sentencify` command line.
"""

__version__ = "0.2.0"

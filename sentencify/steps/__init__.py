"""Step logic of the hourly chain: ETL (H) -> profiles (G) -> vectors (Qdrant) -> views.

Plain functions of (database handles, window); the Airflow operators and `sentencify run` call them.
"""

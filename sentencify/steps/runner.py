"""Run one step for one window from settings: what `sentencify run` and the Airflow operators share."""

from __future__ import annotations

from datetime import timedelta

from sentencify import mongo
from sentencify.settings import Settings
from sentencify.window import Window

STEPS = ("etl", "profile", "vectors", "views")


def run_step(step: str, window: Window, settings: Settings, *, full: bool = False, db=None) -> dict:
    """`db` lets a caller (an Airflow hook) pass its own MongoDB handle; by default one is made from settings."""
    own = db is None
    client = mongo.client(settings.mongo_uri, app_name=f"sentencify-{step}") if own else None
    db = client[settings.mongo_db] if own else db
    try:
        if step == "etl":
            from sentencify.steps.etl import run_etl
            from sentencify.steps.examples import Rules

            return run_etl(db, window, Rules(time_gap=timedelta(seconds=settings.etl_time_gap_s)), full=full).summary()
        if step == "profile":
            import redis

            from sentencify.steps.profiles import run_profile

            r = redis.Redis.from_url(settings.redis_url)
            try:
                return run_profile(db, r, window)
            finally:
                r.close()
        if step == "vectors":
            from sentencify import vectorstore
            from sentencify.steps.vectors import run_vectors

            qc = vectorstore.client(settings)
            try:
                return run_vectors(db, qc, window, collection=settings.qdrant_collection, dim=settings.embedding_dim,
                                   threshold=settings.vector_real_threshold, full=full)
            finally:
                qc.close()
        if step == "views":
            import psycopg2

            from sentencify.steps.views import run_views

            import redis

            conn = psycopg2.connect(settings.analytics_db_uri)
            r = redis.Redis.from_url(settings.redis_url)
            try:
                return run_views(db, conn, window, redis_client=r)
            finally:
                conn.close()
                r.close()
        raise ValueError(f"unknown step {step!r}; choose from {', '.join(STEPS)}")
    finally:
        if own:
            client.close()

"""OpenLineage datasets of each step, named as the providers name them (read by the operators'
`get_openlineage_facets_on_complete`), and the Assets' URIs, from the configured stores.

MongoDB: namespace `mongodb://host:port`, name `database.collection` (as the Mongo provider);
PostgreSQL: `postgres://host:port`, `database.schema.table` (as the Postgres provider); Redis and
Qdrant, which have no naming convention yet: `redis://host:port` + `db/key-pattern`, and
`qdrant://host:port` (a server) or `file://path` (local mode) + the collection.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sentencify.schemas import EVENT_TYPES
from sentencify.settings import Settings

RAW = [et.name for et in EVENT_TYPES]
VIEW_TABLES = [
    "fact_traffic",
    "fact_categories",
    "fact_latency",
    "fact_dead_letters",
    "fact_examples",
    "fact_sessions",
    "fact_users",
    "pipeline_runs",
    "consumer_state",
    "consumer_partition_lag",
    "freshness",
    "quarantine",
]
VIEWS = [
    "v_kpis",
    "v_traffic_hourly",
    "v_category_distribution",
    "v_latency_hourly",
    "v_golden_data",
    "v_acceptance_daily",
    "v_funnel",
    "v_quality",
    "v_dead_letters_daily",
    "v_pipeline_state",
    "v_consumer_lag",
    "v_freshness",
    "v_quarantine",
]


def _netloc(uri: str, default_port: int) -> str:
    u = urlsplit(uri)
    return f"{u.hostname}:{u.port or default_port}"


def mongo_namespace(settings: Settings) -> str:
    return f"mongodb://{_netloc(settings.mongo_uri, 27017)}"


def qdrant_namespace(settings: Settings) -> str:
    return f"qdrant://{_netloc(settings.qdrant_url, 6333)}" if settings.qdrant_url else f"file://{settings.qdrant_path}"


def analytics_db(settings: Settings) -> tuple[str, str]:
    u = urlsplit(settings.analytics_db_uri)
    return f"postgres://{_netloc(settings.analytics_db_uri, 5432)}", u.path.lstrip("/") or "postgres"


def redis_dataset(settings: Settings) -> tuple[str, str]:
    u = urlsplit(settings.redis_url)
    return f"redis://{_netloc(settings.redis_url, 6379)}", f"{u.path.lstrip('/') or '0'}/user_profile:*"


def step_datasets(
    step: str, settings: Settings, mongo_db: str | None = None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(inputs, outputs) of one step as (namespace, name) pairs."""
    db = mongo_db or settings.mongo_db
    mongo = mongo_namespace(settings)

    def m(*collections: str) -> list[tuple[str, str]]:
        return [(mongo, f"{db}.{c}") for c in collections]

    pg, database = analytics_db(settings)
    if step == "etl":
        return m(*RAW), m("training_examples", "etl_rejects")
    if step == "profile":
        return m("editor_recommend_options", "editor_run_paraphrasing", "editor_selected_paraphrasing", "context_block"), [
            *m("user_profile"),
            redis_dataset(settings),
        ]
    if step == "vectors":
        return m("training_examples"), [(qdrant_namespace(settings), settings.qdrant_collection)]
    if step == "views":
        return (
            [
                *m(*RAW, "dead_letters", "training_examples", "user_profile", "pipeline_runs", "pipeline_progress"),
                redis_dataset(settings),
            ],
            [(pg, f"{database}.sentencify.{t}") for t in VIEW_TABLES + VIEWS],
        )
    raise ValueError(f"unknown step {step!r}")


def asset_uri(kind: str, settings: Settings) -> str:
    """The URI of each step's Asset, naming the configured store and database."""
    if kind in ("training_examples", "user_profile"):
        return f"{mongo_namespace(settings)}/{settings.mongo_db}/{kind}"
    if kind == "vectors":
        if settings.qdrant_url:
            return f"{qdrant_namespace(settings)}/{settings.qdrant_collection}"
        return f"file://{settings.qdrant_path}/{settings.qdrant_collection}"
    pg, database = analytics_db(settings)
    return f"{pg}/{database}/sentencify/v_kpis"

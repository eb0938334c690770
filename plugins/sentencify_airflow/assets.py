"""The Assets that chain the DAGs: each step's output, updated once the step's run is published.

URIs name the store and database of each step's Airflow connection (sentencify_airflow.connections,
.lineage), in the form each provider validates. The name is the URI: pointing the chain at another
database makes new assets rather than clashing with the old ones' names. Each asset is made when a
DAG file first imports it, reading only its own store's connection: a missing `qdrant_default`
breaks the DAGs that use the vectors asset, with the connection's id in the import error, and no other.
"""

from __future__ import annotations

from functools import cache

from airflow.sdk import Asset

from sentencify.settings import Settings
from sentencify_airflow.connections import settings_from_connections
from sentencify_airflow.lineage import asset_uri

# Asset name -> (the kind lineage.asset_uri names, the store whose connection locates it)
_ASSETS = {
    "TRAINING_EXAMPLES": ("training_examples", "mongo"),
    "USER_PROFILES": ("user_profile", "mongo"),
    "VECTORS": ("vectors", "qdrant"),
    "VIEWS": ("views", "analytics"),
}
__all__ = list(_ASSETS)


@cache
def _asset(name: str) -> Asset:
    kind, store = _ASSETS[name]
    return Asset(asset_uri(kind, settings_from_connections(Settings.from_env(), (store,))), group="sentencify")


def __getattr__(name: str) -> Asset:  # PEP 562: `from sentencify_airflow.assets import VECTORS`
    if name in _ASSETS:
        return _asset(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

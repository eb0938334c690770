"""How fresh each stage of the platform is: the newest data each one reflects (for `v_freshness`).

- raw logs: the newest `ingested_at` of the seven log collections (see `newest_ingested`);
- training examples, profiles (MongoDB), views: their step's progress (`safe_until`): everything
  ingested before it is reflected there;
- profiles in Redis: the progress the profile step wrote into Redis itself next to the profiles,
  so a Redis that was emptied or missed a run shows as stale on its own;
- real Qdrant points: the progress the vectors step wrote into the collection's metadata
  (sentencify.steps.census.QDRANT_MARKER), so a dropped or re-created collection shows as stale
  until a run re-materialises it (pipeline.md, "Derived stores agree with MongoDB").
A stalled chain shows as a growing gap between the raw logs and the stages after them; a quiet
hour does not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.database import Database

from sentencify.schemas import EVENT_TYPES
from sentencify.steps import progress

REDIS_MARKER = "sentencify:freshness:user_profile"  # the profile step's safe_until, ISO-8601
STAGES = ("raw_logs", "training_examples", "user_profile", "redis_profiles", "qdrant_points", "views")


def newest_ingested(db: Database, since: datetime | None = None) -> datetime | None:
    """The newest `ingested_at` of the log collections. Looked for at or after `since` first (an
    index range: a sorted find_one made the local server sort the whole collection), then, only
    if nothing came since, by a sort."""
    newest = None
    for et in EVENT_TYPES:
        found = None
        if since is not None:
            found = max(
                (d["ingested_at"] for d in db[et.name].find({"ingested_at": {"$gte": since}}, {"ingested_at": 1})), default=None
            )
        if found is None:
            doc = db[et.name].find_one({}, {"ingested_at": 1}, sort=[("ingested_at", DESCENDING)])
            found = doc.get("ingested_at") if doc else None
        if found is not None and (newest is None or found > newest):
            newest = found
    return newest


def measure(
    db: Database,
    redis_client: Any,
    views_safe_until: datetime | None,
    now: datetime,
    since: datetime | None = None,
    qdrant_marker: str | bool | None = False,
) -> list[tuple]:
    """Rows (stage, order, newest, measured_at) for the `freshness` table; `since`: where the views
    run started reading (recent logs are looked for from there); `qdrant_marker`: the marker read
    from the collection (None: absent; False: not read, the vectors step's progress stands in)."""
    marker = redis_client.get(REDIS_MARKER) if redis_client is not None else None
    qdrant = progress.safe_until(db, "vectors") if qdrant_marker is False else _parsed(qdrant_marker)
    newest = {
        "raw_logs": newest_ingested(db, since),
        "training_examples": progress.safe_until(db, "etl"),
        "user_profile": progress.safe_until(db, "profile"),
        "redis_profiles": datetime.fromisoformat(marker.decode()) if marker else None,
        "qdrant_points": qdrant,
        "views": max(filter(None, [progress.safe_until(db, "views"), views_safe_until]), default=None),
    }
    return [(stage, n, None if newest[stage] == progress.EPOCH else newest[stage], now) for n, stage in enumerate(STAGES, 1)]


def _parsed(marker: str | bool | None) -> datetime | None:
    return datetime.fromisoformat(marker) if isinstance(marker, str) else None

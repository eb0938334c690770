"""The erasure requests as the dashboard shows them: no personal data (pipeline.md, "Personal data")."""

from __future__ import annotations

from pymongo.database import Database

REQUESTS = "erasure_requests"
SHOWN_HASH = 16  # hex digits of the user's keyed hash the dashboard shows (a request's name, not a way back)


def rows(db: Database) -> list[tuple]:
    """(request, status, requested_at, finished_at, removed per store) per request, for
    `sentencify.erasures` (the views step)."""
    return [
        (
            d["_id"][:SHOWN_HASH],
            d.get("status") or "running",
            d["requested_at"],
            d.get("finished_at"),
            dict(d.get("removed") or {}),
        )
        for d in db[REQUESTS].find({}, {"status": 1, "requested_at": 1, "finished_at": 1, "removed": 1}).sort("_id", 1)
    ]

"""Per-session quarantine: what one session (or one record) breaks in a step stops only that session.

Pipeline.md, opening: "where no rule fits, that session is quarantined with its reason, counted on
the dashboard, and the rest of the window is published". MongoDB collection `pipeline_quarantine`,
`_id` = "<step>:<session_id>", fields step, session_id, reason (short code), detail (words),
first_seen, last_seen, attempts. A quarantined session is retried by the next run of the step that
touches it and leaves quarantine when that run publishes it (`release`). The views step exports the
collection to `sentencify.quarantine` / `v_quarantine`.

Only errors about the data (each store module's `is_data_error`) are isolated; anything else (a
store that is down) propagates and fails the run. `bisect` finds the sessions at fault in a batched
write with O(k log n) writes for k bad sessions among n.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from pymongo import DeleteMany, UpdateOne
from pymongo.database import Database

from sentencify.steps.fence import NO_FENCE, Fence
from sentencify.steps.publish import publish

log = logging.getLogger("sentencify.quarantine")

QUARANTINE = "pipeline_quarantine"
DETAIL_CHARS = 500  # the error in words, cut: a detail is read by people, not replayed

T = TypeVar("T")


def key(step: str, session_id: str) -> str:
    return f"{step}:{session_id}"


@dataclass
class Quarantined:
    """The sessions one run of a step could not publish: session -> (reason, detail)."""

    step: str
    entries: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, session_id: str, reason: str, detail: str | BaseException) -> None:
        text = detail if isinstance(detail, str) else f"{type(detail).__name__}: {detail}"
        self.entries[session_id] = (reason, text[:DETAIL_CHARS])
        log.warning(
            "session quarantined",
            extra={"fields": {"step": self.step, "session_id": session_id, "reason": reason, "detail": text[:200]}},
        )

    def __contains__(self, session_id: object) -> bool:
        return session_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for reason, _ in self.entries.values():
            out[reason] = out.get(reason, 0) + 1
        return out


def settle(
    db: Database, quarantined: Quarantined, processed: Iterable[str] | None, now: datetime | None = None, fence: Fence = NO_FENCE
) -> None:
    """Record this run's quarantined sessions and release the processed ones that succeeded.

    `processed`: every session the run tried; None for a full run (it tried every session, so
    every other quarantined session of the step is released). Call once the step's stores are
    written, before the run is recorded (a run that fails later retries them all anyway). Written
    through `publish` (one fenced transaction: a run that lost its lease records nothing)."""
    now = now or datetime.now(UTC)
    ops: list = [
        UpdateOne(
            {"_id": key(quarantined.step, s)},
            {
                "$set": {"step": quarantined.step, "session_id": s, "reason": reason, "detail": detail, "last_seen": now},
                "$setOnInsert": {"first_seen": now},
                "$inc": {"attempts": 1},
            },
            upsert=True,
        )
        for s, (reason, detail) in sorted(quarantined.entries.items())
    ]
    if processed is None:
        kept = sorted(key(quarantined.step, s) for s in quarantined.entries)
        ops.append(DeleteMany({"step": quarantined.step, "_id": {"$nin": kept}}))
    else:
        released = sorted(key(quarantined.step, s) for s in set(processed) if s not in quarantined)
        ops += [DeleteMany({"_id": {"$in": released[i : i + 1000]}}) for i in range(0, len(released), 1000)]
    publish(db, {QUARANTINE: ops}, fence)


def bisect(
    items: list[T], write: Callable[[list[T]], None], is_data_error: Callable[[BaseException], bool]
) -> list[tuple[T, BaseException]]:
    """`write(items)`; on an error about the data, the same write on each half, down to the single
    items at fault, which are returned with their error (every other item is written). `write` must
    be all-or-nothing for the items it gets (one transaction) and idempotent. An error that is not
    about the data propagates at once."""
    try:
        write(items)
        return []
    except Exception as exc:
        if not is_data_error(exc):
            raise
        if len(items) <= 1:
            return [(items[0], exc)] if items else []
    mid = len(items) // 2
    return bisect(items[:mid], write, is_data_error) + bisect(items[mid:], write, is_data_error)


def current(db: Database) -> list[dict]:
    """Every quarantined session, for the views step's export."""
    return list(db[QUARANTINE].find({}, sort=[("_id", 1)]))

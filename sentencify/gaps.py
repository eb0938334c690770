"""Ingestion gaps: ranges of records that left Kafka before the consumer read them (events.md,
"Records that left Kafka before the consumer read them").

`ingestion_gaps` holds one document per gap, written by the consumer and acknowledged with
`sentencify gaps ack`; `ingestion_positions` holds, per partition, the last offset the consumer
committed and the partition's end it last saw. The consumer keeps that memory of its own because
a deleted topic takes the group's committed offsets with it (Kafka and the local broker both drop
them): without it, a topic re-created while the consumer was down looks like a new topic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

GAPS = "ingestion_gaps"
POSITIONS = "ingestion_positions"

# Why the records cannot be read: the partition's first offset moved past them (retention,
# DeleteRecords), or the topic was deleted and re-created (its offsets start again).
DELETED = "deleted"
RECREATED = "recreated"

WHY = {
    DELETED: "Kafka deleted them (retention.ms / retention.bytes or DeleteRecords) before the consumer read them",
    RECREATED: "the topic was deleted and re-created (its offsets start again) before the consumer read them",
}


@dataclass(frozen=True)
class Gap:
    """Offsets [first_offset, last_offset] of one partition that can never be read.

    `last_offset`/`count` are None when the end of the range is not known (a re-created topic:
    the old topic's end is gone with it); `at_least` is then the number of records known lost
    (up to the end the consumer last saw), else equal to `count`."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int | None
    reason: str
    at_least: int

    @property
    def count(self) -> int | None:
        return None if self.last_offset is None else self.last_offset - self.first_offset + 1

    @property
    def id(self) -> str:
        """Deterministic: the same gap found again (a restart before the commit moved past it) is the same document."""
        return f"{self.topic}:{self.partition}:{self.first_offset}:{self.reason}"

    def describe(self) -> str:
        last = "unknown" if self.last_offset is None else str(self.last_offset)
        how_many = str(self.count) if self.count is not None else f"at least {self.at_least}"
        return f"{how_many} records of {self.topic}[{self.partition}] (offsets {self.first_offset}..{last})"


@dataclass(frozen=True)
class Remembered:
    """What the consumer last recorded of a partition: the offset it committed (the next to read) and the end it saw."""

    next_offset: int
    end_seen: int


def to_doc(gap: Gap, found_at: datetime) -> dict[str, Any]:
    return {"_id": gap.id, **asdict(gap), "count": gap.count, "why": WHY[gap.reason], "found_at": found_at}


def record(db: Database, gap: Gap, found_at: datetime) -> bool:
    """Upsert the gap by its id; True when it was not recorded before. A gap found again with a
    larger end (the partition's first offset moved on meanwhile) keeps its first record, extended.
    Raises PyMongoError."""
    doc = to_doc(gap, found_at)
    grow = {k: doc.pop(k) for k in ("last_offset", "count", "at_least")}
    update: dict[str, Any] = {"$setOnInsert": {**doc, "acknowledged": False, "acknowledged_at": None}}
    if grow["last_offset"] is None:
        update["$setOnInsert"].update(last_offset=None, count=None)
        update["$max"] = {"at_least": grow["at_least"]}
    else:
        update["$max"] = grow
    result = db[GAPS].update_one({"_id": gap.id}, update, upsert=True)
    return result.upserted_id is not None


def unacknowledged(db: Database) -> list[dict[str, Any]]:
    return list(db[GAPS].find({"acknowledged": False}).sort([("found_at", 1), ("_id", 1)]))


def listing(db: Database, *, include_acknowledged: bool = True) -> list[dict[str, Any]]:
    query = {} if include_acknowledged else {"acknowledged": False}
    return list(db[GAPS].find(query).sort([("found_at", 1), ("_id", 1)]))


def acknowledge(db: Database, now: datetime, *, ids: Iterable[str] = (), topic: str | None = None) -> int:
    """Mark unacknowledged gaps acknowledged: those with these ids, else those of `topic`, else all.
    Returns how many changed (an acknowledged gap keeps its first acknowledgement time)."""
    query: dict[str, Any] = {"acknowledged": False}
    wanted = list(ids)
    if wanted:
        query["_id"] = {"$in": wanted}
    elif topic is not None:
        query["topic"] = topic
    return db[GAPS].update_many(query, {"$set": {"acknowledged": True, "acknowledged_at": now}}).modified_count


def health_line(gaps: list[dict[str, Any]]) -> str | None:
    """`/healthz`'s reason while gaps are unacknowledged, or None."""
    if not gaps:
        return None
    by_topic: dict[str, int] = {}
    for g in gaps:
        by_topic[g["topic"]] = by_topic.get(g["topic"], 0) + int(g.get("count") or g.get("at_least") or 0)
    what = ", ".join(f"{n} of {t}" for t, n in sorted(by_topic.items()))
    return (
        f"{len(gaps)} ingestion gap(s) unacknowledged: records that left Kafka before the consumer read them ({what}); "
        "see `sentencify gaps`, then acknowledge with `sentencify gaps ack`"
    )


def render(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of `listing` rows, oldest first."""
    head = ("id", "topic", "partition", "first", "last", "count", "reason", "found at (UTC)", "acknowledged")
    table = [head]
    for r in rows:
        count = r.get("count")
        table.append(
            (
                str(r["_id"]),
                str(r["topic"]),
                str(r["partition"]),
                str(r["first_offset"]),
                "unknown" if r.get("last_offset") is None else str(r["last_offset"]),
                f"unknown (>= {r.get('at_least') or 0})" if count is None else str(count),
                str(r["reason"]),
                r["found_at"].strftime("%Y-%m-%d %H:%M:%S"),
                r["acknowledged_at"].strftime("%Y-%m-%d %H:%M:%S") if r.get("acknowledged") else "no",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)


# -- the consumer's memory of its positions --------------------------------------------------------


def position_id(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def remember(db: Database, positions: dict[tuple[str, int], tuple[int, int]], now: datetime) -> None:
    """Per partition (next offset committed, end seen). Raises PyMongoError."""
    if not positions:
        return
    db[POSITIONS].bulk_write(
        [
            UpdateOne(
                {"_id": position_id(t, p)},
                {"$set": {"topic": t, "partition": p, "next_offset": nxt, "end_seen": end, "updated_at": now}},
                upsert=True,
            )
            for (t, p), (nxt, end) in positions.items()
        ],
        ordered=False,
    )


def remembered(db: Database, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Remembered]:
    """Raises PyMongoError."""
    ids = [position_id(t, p) for t, p in partitions]
    out = {}
    for doc in db[POSITIONS].find({"_id": {"$in": ids}}):
        out[(doc["topic"], int(doc["partition"]))] = Remembered(int(doc["next_offset"]), int(doc.get("end_seen") or 0))
    return out

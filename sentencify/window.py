"""The one-hour window a step run covers: [start, end)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sentencify.schemas import to_utc_datetime


def floor_hour(ts: datetime) -> datetime:
    """The UTC hour a timestamp falls in."""
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"window end {self.end.isoformat()} must be after its start {self.start.isoformat()}")

    @classmethod
    def parse(cls, start: str | datetime, end: str | datetime | None = None) -> Window:
        """ISO strings or datetimes (no offset means UTC); without `end`, the hour that starts at `start`."""
        s = to_utc_datetime(start)
        e = to_utc_datetime(end) if end is not None else s + timedelta(hours=1)
        return cls(s, e)

    @classmethod
    def hour_containing(cls, ts: datetime) -> Window:
        start = floor_hour(ts)
        return cls(start, start + timedelta(hours=1))

    def hours(self) -> list[Window]:
        """The whole hours this window spans (for backfills)."""
        out, cursor = [], self.start
        while cursor < self.end:
            out.append(Window(cursor, min(cursor + timedelta(hours=1), self.end)))
            cursor += timedelta(hours=1)
        return out

    def mongo_filter(self, field: str = "ingested_at") -> dict:
        return {field: {"$gte": self.start, "$lt": self.end}}

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def windows_for_run(
    *, start: str | None, end: str | None, event_windows: list[list[str]] | None, logical_date: datetime | None
) -> list[Window]:
    """The windows one run of a step covers (interfaces.md, 'Airflow').

    Explicit start/end params win; else the windows its triggering asset events carry (a downstream
    step covers what its upstream covered); else the hour that starts at the logical date.
    """
    if start:
        return [Window.parse(start, end or None)]
    if event_windows:
        return sorted({Window.parse(s, e) for s, e in event_windows}, key=lambda w: w.start)
    if logical_date is None:
        raise ValueError("no start/end, no triggering asset event and no logical date: cannot tell the window")
    return [Window.parse(logical_date)]


def as_extra(windows: list[Window]) -> dict:
    """What an asset event carries so the next step covers the same windows."""
    return {"windows": [[w.start.isoformat(), w.end.isoformat()] for w in windows]}

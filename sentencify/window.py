"""The window a step run covers, [start, end), and how an Airflow run finds its windows."""

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
    """The windows one run of a step covers (interfaces.md, 'Airflow'); [] for a run with no window.

    Explicit start/end params win; else the windows its triggering asset events carry (a downstream
    step covers what its upstream covered); else the hour that starts at the logical date; else none
    (a run with no logical date: it processes everything not yet processed up to its start,
    pipeline.md). Raises ValueError for an `end` without a `start` or an end not after its start.
    """
    if start:
        return [Window.parse(start, end or None)]
    if end:
        raise ValueError("param `end` was given without `start`: give both, or neither for the run's own hour")
    if event_windows:
        return sorted({Window.parse(s, e) for s, e in event_windows}, key=lambda w: w.start)
    if logical_date is None:
        return []
    return [Window.parse(logical_date)]


@dataclass(frozen=True)
class Triggered:
    """What a run's triggering asset events ask of it (the extras `as_extra` wrote upstream)."""

    windows: list[list[str]]  # [[start ISO, end ISO], ...] of every event that carries windows
    unwindowed: bool  # some event carried no window (a run with no window upstream, or made by hand)
    full: bool  # some event came from a full rebuild: this step rebuilds in full too


def triggered_by(extras: list[dict | None]) -> Triggered:
    """Read the extras of the triggering asset events; [] of them (no asset trigger) asks nothing."""
    windows: list[list[str]] = []
    unwindowed = full = False
    for extra in extras:
        extra = extra or {}
        event_windows = extra.get("windows") or []
        windows += event_windows
        unwindowed = unwindowed or not event_windows or bool(extra.get("unwindowed"))
        full = full or bool(extra.get("full"))
    return Triggered(windows, unwindowed, full)


def step_runs(windows: list[Window], *, unwindowed: bool, full: bool) -> list[Window | None]:
    """The `run_step` calls of one Airflow run, each a window or None (no window, pipeline.md).

    A full rebuild is one run: it reads everything, whatever window it is labelled with. Otherwise
    each window in order, then one run with no window when something asked for it (or nothing
    gave a window): it picks up whatever the windows did not cover, up to its start."""
    if full:
        return [None]
    return [*windows, None] if unwindowed or not windows else list(windows)


def as_extra(windows: list[Window], *, unwindowed: bool = False, full: bool = False) -> dict:
    """What an asset event carries so the next step covers the same windows (and, when this run had
    no window or rebuilt in full, does the same)."""
    extra: dict = {"windows": [[w.start.isoformat(), w.end.isoformat()] for w in windows]}
    if unwindowed:
        extra["unwindowed"] = True
    if full:
        extra["full"] = True
    return extra

"""The window arithmetic (sentencify/window.py) and the hour facts' whole hours, over any timestamp."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentencify.steps.views import whole_hours
from sentencify.window import Window, as_extra, floor_hour, step_runs, triggered_by, windows_for_run

HOUR = timedelta(hours=1)
# Millisecond timestamps in any fixed offset: what BSON keeps and what the CLI and Airflow hand over.
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.builds(
    lambda ms, tz: (datetime(2020, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).astimezone(tz),
    st.integers(min_value=0, max_value=20 * 365 * 86_400_000),
    offsets,
)
spans = st.integers(min_value=1, max_value=5 * 86_400_000).map(lambda ms: timedelta(milliseconds=ms))
windows = st.builds(lambda s, d: Window(s, s + d), instants, spans)


@given(instants)
def test_floor_hour_is_the_utc_hour_the_instant_falls_in(ts: datetime) -> None:
    h = floor_hour(ts)
    assert h.tzinfo == UTC and (h.minute, h.second, h.microsecond) == (0, 0, 0)
    assert h <= ts < h + HOUR


@given(instants)
def test_hour_containing(ts: datetime) -> None:
    w = Window.hour_containing(ts)
    assert w.start <= ts < w.end and w.end - w.start == HOUR


@given(windows)
def test_hours_partition_the_window(w: Window) -> None:
    hours = w.hours()
    assert hours[0].start == w.start and hours[-1].end == w.end
    assert all(x.end == y.start for x, y in pairwise(hours))
    assert all(h.end - h.start <= HOUR for h in hours)
    assert all(h.end - h.start == HOUR for h in hours[:-1])


@given(windows)
def test_whole_hours_are_the_fewest_whole_utc_hours_that_cover_the_window(w: Window) -> None:
    hours = whole_hours(w)
    for bound in (hours.start, hours.end):
        assert bound == floor_hour(bound)
    assert hours.start <= w.start < hours.start + HOUR
    assert hours.end - HOUR < w.end <= hours.end
    assert whole_hours(hours) == hours


@given(windows)
def test_a_window_survives_its_asset_event(w: Window) -> None:
    extra = as_extra([w])
    t = triggered_by([extra])
    assert (t.unwindowed, t.full) == (False, False)
    assert windows_for_run(start=None, end=None, event_windows=t.windows, logical_date=None) == [w]


def test_window_refuses_naive_or_empty_bounds() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(t.replace(tzinfo=None), t + HOUR)
    with pytest.raises(ValueError, match="must be after its start"):
        Window(t, t)


def test_parse_reads_no_offset_as_utc_and_defaults_to_one_hour() -> None:
    w = Window.parse("2026-01-01T10:00:00")
    assert (w.start, w.end) == (datetime(2026, 1, 1, 10, tzinfo=UTC), datetime(2026, 1, 1, 11, tzinfo=UTC))
    assert str(w) == "[2026-01-01T10:00:00+00:00, 2026-01-01T11:00:00+00:00)"
    assert w.mongo_filter("created_at") == {"created_at": {"$gte": w.start, "$lt": w.end}}


def test_windows_for_run_precedence() -> None:
    day = datetime(2026, 1, 1, tzinfo=UTC)
    events = [["2026-01-01T05:00:00+00:00", "2026-01-01T06:00:00+00:00"], ["2026-01-01T01:00:00", "2026-01-01T02:00:00"]]
    assert windows_for_run(start="2026-01-01T03:00:00", end=None, event_windows=events, logical_date=day) == [
        Window.parse("2026-01-01T03:00:00")
    ]
    got = windows_for_run(start=None, end=None, event_windows=events + events[:1], logical_date=day)
    assert [w.start.hour for w in got] == [1, 5]  # deduplicated, in order
    assert windows_for_run(start=None, end=None, event_windows=None, logical_date=day) == [Window(day, day + HOUR)]
    assert windows_for_run(start=None, end=None, event_windows=None, logical_date=None) == []
    with pytest.raises(ValueError, match="without `start`"):
        windows_for_run(start=None, end="2026-01-01T03:00:00", event_windows=None, logical_date=day)


def test_triggered_by_and_step_runs() -> None:
    w = Window.parse("2026-01-01T03:00:00")
    assert triggered_by([]) == triggered_by([]) and triggered_by([]).windows == []
    t = triggered_by([as_extra([w]), None, as_extra([], full=True)])
    assert (t.unwindowed, t.full) == (True, True)
    assert step_runs([w], unwindowed=False, full=True) == [None]
    assert step_runs([w], unwindowed=True, full=False) == [w, None]
    assert step_runs([], unwindowed=False, full=False) == [None]
    assert step_runs([w], unwindowed=False, full=False) == [w]
    assert as_extra([w], unwindowed=True, full=True) == {
        "windows": [[w.start.isoformat(), w.end.isoformat()]],
        "unwindowed": True,
        "full": True,
    }

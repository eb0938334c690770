"""The gap arithmetic (consumer/gaps.py `decide`) and the gap's identity, health line and log filter."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.gaps import decide
from sentencify import logs
from sentencify.gaps import DELETED, RECREATED, Gap, Remembered, health_line

offsets = st.integers(min_value=0, max_value=10**12)


@st.composite
def partitions(draw):
    earliest = draw(offsets)
    end = draw(st.integers(min_value=earliest, max_value=earliest + 10**6))
    position = draw(st.none() | offsets | st.integers(min_value=max(0, earliest - 5), max_value=end + 5))
    remembered = draw(st.none() | st.builds(Remembered, offsets, offsets))
    return position, remembered, earliest, end


@given(partitions())
def test_reading_starts_at_an_offset_that_exists_and_never_at_the_end_unless_nothing_else(case):
    position, remembered, earliest, end = case
    d = decide("t", 0, position=position, remembered=remembered, earliest=earliest, end=end)
    assert earliest <= d.start <= end
    if d.start == end and end > earliest:  # the end only when the group had read everything
        assert position == end


@given(partitions())
def test_every_record_is_either_read_or_in_a_gap(case):
    position, remembered, earliest, end = case
    d = decide("t", 0, position=position, remembered=remembered, earliest=earliest, end=end)
    at = position if position is not None else (remembered.next_offset if remembered else None)
    if at is None or earliest <= at <= end:  # nothing lost: reading starts at or before the position
        assert d.gaps == ()
        assert d.start <= (at if at is not None else earliest)
        return
    assert d.gaps, "a position outside the log is never silent"
    for gap in d.gaps:
        assert gap.first_offset >= 0
        if gap.last_offset is not None:
            assert gap.count == gap.last_offset - gap.first_offset + 1 == gap.at_least > 0
    if at < earliest:  # deleted: exactly [at, earliest - 1], then on from earliest
        assert [(g.first_offset, g.last_offset, g.reason) for g in d.gaps] == [(at, earliest - 1, DELETED)]
        assert d.start == earliest
    else:  # past the end: the topic's offsets started again
        assert d.gaps[0].reason == RECREATED and d.gaps[0].first_offset == at and d.gaps[0].last_offset is None
        assert d.start == earliest


def test_the_issues_example_committed_100_then_30_of_50_deleted():
    d = decide("t", 3, position=100, remembered=None, earliest=130, end=150)
    assert d.start == 130
    assert d.gaps == (Gap("t", 3, 100, 129, DELETED, 30),)
    assert d.gaps[0].count == 30 and d.gaps[0].id == "t:3:100:deleted"


def test_a_recreated_topic_counts_what_the_consumer_saw_of_the_old_one():
    seen = Remembered(next_offset=10, end_seen=15)
    d = decide("t", 0, position=None, remembered=seen, earliest=0, end=3)
    assert d.start == 0
    assert d.gaps == (Gap("t", 0, 10, None, RECREATED, 5),)
    assert d.gaps[0].count is None and "at least 5" in d.gaps[0].describe()


def test_a_recreated_topic_whose_first_records_are_gone_too():
    d = decide("t", 0, position=10, remembered=None, earliest=2, end=4)
    assert [(g.first_offset, g.last_offset, g.reason) for g in d.gaps] == [(10, None, RECREATED), (0, 1, DELETED)]


def test_no_committed_offset_reads_from_the_first_offset_even_if_the_consumer_read_further():
    # The group's offsets went with a deleted topic (or expired): the records from the first offset
    # are read again (no-ops if stored), so a topic re-created with more records is read whole.
    d = decide("t", 0, position=None, remembered=Remembered(5, 5), earliest=0, end=20)
    assert (d.start, d.gaps) == (0, ())


def test_a_new_partition_starts_at_its_first_offset():
    assert decide("t", 0, position=None, remembered=None, earliest=7, end=9).start == 7


def test_nonsense_offsets_are_refused():
    with pytest.raises(ValueError):
        decide("t", 0, position=0, remembered=None, earliest=5, end=4)


def test_health_line_names_topics_and_the_command():
    line = health_line([{"topic": "a", "count": 30}, {"topic": "b", "count": None, "at_least": 2}])
    assert line is not None and "30 of a" in line and "2 of b" in line and "sentencify gaps ack" in line
    assert health_line([]) is None


def test_kafka_pythons_offset_reset_lines_are_not_hidden():
    logs.setup("INFO")
    fetcher = logging.getLogger("kafka.consumer.fetcher")
    assert fetcher.isEnabledFor(logging.INFO)
    make = lambda msg: logging.LogRecord("kafka.consumer.fetcher", logging.INFO, "", 0, msg, (), None)  # noqa: E731
    assert fetcher.filter(make("Resetting offset for partition %s to offset %s."))
    assert fetcher.filter(make("Fetch offset %s is out of range for topic-partition %s"))
    assert not fetcher.filter(make("Fetch to node %s failed: Cancelled"))

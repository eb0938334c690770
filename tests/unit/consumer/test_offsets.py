"""Unit tests (no services): the offset tracker: a commit never passes an unwritten record."""

from __future__ import annotations

from consumer.offsets import OffsetTracker
from consumer.records import Position

POS = Position("p.recommend_log", 0, 7)


def test_offsets_never_pass_an_unwritten_record():
    t = OffsetTracker()
    tp = ("t", 0)
    for off in range(5):
        t.track(tp, off)
    t.done(tp, 1)
    t.done(tp, 2)
    assert t.position(tp) == 0  # offset 0 still pending
    t.done(tp, 0)
    assert t.position(tp) == 3
    t.done(tp, 3)
    t.done(tp, 4)
    assert t.committable() == {tp: 5}
    t.mark_committed({tp: 5})
    assert t.committable() == {}


def test_offsets_of_a_forgotten_partition_are_ignored():
    t = OffsetTracker()
    t.track(("t", 0), 0)
    t.forget([("t", 0)])
    t.done(("t", 0), 0)
    assert t.committable() == {}

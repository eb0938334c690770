"""Unit tests (no services): the batcher: when a micro-batch is due, what it holds."""

from __future__ import annotations

import pytest

from consumer.batch import Batcher
from consumer.records import Item, Position

POS = Position("p.recommend_log", 0, 7)


def _item(offset: int, partition: int = 0) -> Item:
    return Item({"_id": offset}, Position("t", partition, offset))


def test_batch_due_on_size_then_on_age():
    b = Batcher(batch_size=3, flush_interval_s=1.0)
    assert not b.add("c", _item(0), now=0.0)
    assert b.due(0.5) == []
    assert b.due(1.0) == ["c"]  # oldest waited the interval
    b.add("c", _item(1), 0.1)
    assert b.add("c", _item(2), 0.2)  # full
    assert [i.position.offset for i in b.peek("c")] == [0, 1, 2]
    b.add("c", _item(3), 0.3)
    b.remove("c", 3)
    assert b.total == 1 and b.due(1.2) == [] and b.due(1.3) == ["c"]  # the remainder keeps its own age
    assert b.next_due_in(1.0) == pytest.approx(0.3)


def test_batch_drop_partitions_forgets_only_those():
    b = Batcher(10, 1.0)
    b.add("c", _item(0, 0), 0)
    b.add("c", _item(1, 1), 0)
    assert b.drop_partitions([("t", 0)]) == 1
    assert [i.position.partition for i in b.peek("c")] == [1] and b.total == 1

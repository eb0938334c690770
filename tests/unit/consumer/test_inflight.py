"""Unit tests (no services; a manual executor): in-flight writes never hold one key twice, and write
one key's records in the order submitted, whatever order writes finish in (events.md conflicts)."""

from __future__ import annotations

from concurrent.futures import Future

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.inflight import InFlightWrites
from consumer.records import Item, Position
from consumer.write import WriteOutcome


class ManualPool:
    """Runs nothing until told: `finish(i)` completes the i-th pending write."""

    def __init__(self) -> None:
        self.pending: list[tuple[Future, list[dict]]] = []

    def submit(self, fn, collection, docs, **kwargs) -> Future:
        future: Future = Future()
        self.pending.append((future, docs))
        return future

    def shutdown(self, **kwargs) -> None:
        pass

    def write(self, *args, **kwargs) -> None:  # stands for the writer: the pool never calls it
        raise AssertionError("not called")


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.sampled_from("abcde"), min_size=1, max_size=40),
    sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=40, max_size=40),
    finish_order=st.lists(st.integers(min_value=0, max_value=10), min_size=200, max_size=200),
    concurrency=st.integers(min_value=1, max_value=3),
)
def test_one_keys_records_are_written_one_at_a_time_in_offset_order(keys, sizes, finish_order, concurrency):
    writes = InFlightWrites(writer=ManualPool(), concurrency=concurrency, backoff_first_s=0.1, backoff_max_s=0.1)
    pool = writes._pool = ManualPool()
    items = [Item({"_id": key, "offset": offset}, Position("t", 0, offset)) for offset, key in enumerate(keys)]
    written: dict[str, list[int]] = {}
    batches, start = [], 0
    for size in sizes:
        if start < len(items):
            batches.append(items[start : start + size])
            start += size
    steps = iter(finish_order)
    while batches or not writes.idle():
        if batches and writes.has_room():
            writes.submit("log", batches.pop(0))
            continue
        in_flight = [doc["_id"] for _, docs in pool.pending for doc in docs]
        assert len(in_flight) == len(set(in_flight)), f"two in-flight writes hold one key: {in_flight}"
        pick = next(steps, 0) % len(pool.pending)
        future, docs = pool.pending.pop(pick)
        for doc in docs:  # the write happens now
            written.setdefault(doc["_id"], []).append(doc["offset"])
        future.set_result(WriteOutcome(inserted=len(docs)))
        writes.collect()
    expected: dict[str, list[int]] = {}
    for offset, key in enumerate(keys):
        expected.setdefault(key, []).append(offset)
    assert written == expected

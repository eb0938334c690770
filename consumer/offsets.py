"""Commit: which offset of each partition is safe to commit."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

TP = tuple[str, int]  # (topic, partition)


class _PartitionState:
    __slots__ = ("committed", "done", "next_offset", "pending")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()  # offsets handed out, in arrival order
        self.done: set[int] = set()  # offsets durably written (or dead-lettered) but not yet contiguous
        self.next_offset: int | None = None  # one past the highest offset seen
        self.committed: int | None = None


class OffsetTracker:
    """Delivery: a partition's commit position never passes a record that is not yet durably stored.

    The position is the lowest offset still pending, or one past the highest offset seen when
    nothing is pending (Kafka commits the *next* offset to read).
    """

    def __init__(self) -> None:
        self._parts: dict[TP, _PartitionState] = {}

    def track(self, tp: TP, offset: int) -> None:
        state = self._parts.get(tp)
        if state is None:
            state = self._parts[tp] = _PartitionState()
        state.pending.append(offset)
        state.next_offset = offset + 1

    def done(self, tp: TP, offset: int) -> None:
        state = self._parts.get(tp)
        if state is None:  # partition revoked meanwhile: its new owner re-reads it
            return
        if state.pending and state.pending[0] == offset:
            state.pending.popleft()
            while state.pending and state.pending[0] in state.done:
                state.done.discard(state.pending.popleft())
        else:
            state.done.add(offset)

    def position(self, tp: TP) -> int | None:
        state = self._parts.get(tp)
        if state is None:
            return None
        return state.pending[0] if state.pending else state.next_offset

    def committable(self, only: Iterable[TP] | None = None) -> dict[TP, int]:
        """Positions that moved since the last commit."""
        out: dict[TP, int] = {}
        for tp in self._parts if only is None else only:
            pos = self.position(tp)
            if pos is not None and pos != self._parts[tp].committed:
                out[tp] = pos
        return out

    def mark_committed(self, offsets: dict[TP, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._parts:
                self._parts[tp].committed = offset

    def committed(self, tp: TP) -> int | None:
        state = self._parts.get(tp)
        return None if state is None else state.committed

    def forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._parts.pop(tp, None)

    def partitions(self) -> list[TP]:
        return list(self._parts)

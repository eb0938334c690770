"""Where to start reading a partition, and which records can no longer be read (events.md,
"Records that left Kafka before the consumer read them").

The consumer runs with `auto_offset_reset="none"`: kafka-python never moves a position by itself
(its default would reset silently, at INFO). At every assignment, and whenever the broker answers
a fetch out of range, `decide` compares where the group would read next with the partition's
first offset (log start) and end (high watermark) and returns the offset to seek to - the first
one that still exists, never the end - and the gaps to record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError

from consumer.offsets import TP
from sentencify.gaps import DELETED, RECREATED, Gap, Remembered
from sentencify.kafka_config import kafka_security
from sentencify.settings import Settings

log = logging.getLogger("sentencify.consumer")


@dataclass(frozen=True)
class Decision:
    start: int  # the offset to seek to
    gaps: tuple[Gap, ...]


def decide(
    topic: str, partition: int, *, position: int | None, remembered: Remembered | None, earliest: int, end: int
) -> Decision:
    """Where to read `topic[partition]` from, and what was lost before that.

    position: the offset the group would read next (its committed offset, or a fetch offset the
      broker answered out of range); None when the group has none for the partition.
    remembered: what the consumer itself last recorded for the partition (ingestion_positions).
    earliest, end: the partition's first available offset and its high watermark now
      (0 <= earliest <= end). Raises ValueError otherwise.

    Rules: a position past the end means the offsets started again (the topic was re-created):
    what the old topic held from that position on is lost, its end unknown. A position below the
    first offset lost [position, earliest - 1]. With no committed offset the partition is read from
    its first offset; if the consumer had read it before (the group's offsets went with a deleted
    topic, or expired), its own memory tells what was lost in the same way.
    """
    if not 0 <= earliest <= end:
        raise ValueError(f"{topic}[{partition}]: first offset {earliest} and end {end} are not 0 <= first <= end")
    at = position if position is not None else (remembered.next_offset if remembered is not None else None)
    if at is None:  # a new partition or group: from the first record that exists
        return Decision(earliest, ())
    if at > end:  # offsets start again: the old topic's records from `at` on are gone with it
        seen = remembered.end_seen if remembered is not None else 0
        gaps = [Gap(topic, partition, at, None, RECREATED, max(0, seen - at))]
        if earliest > 0:  # and the new topic's first records were deleted before the consumer came back
            gaps.append(Gap(topic, partition, 0, earliest - 1, DELETED, earliest))
        return Decision(earliest, tuple(gaps))
    if at < earliest:
        return Decision(earliest, (Gap(topic, partition, at, earliest - 1, DELETED, earliest - at),))
    # Within the log. Without a committed offset, read from the first offset (records read before
    # are no-ops): a topic re-created with more records than the old one had is then read whole.
    return Decision(at if position is not None else earliest, ())


@dataclass(frozen=True)
class PartitionState:
    committed: int | None
    earliest: int
    end: int


class PartitionProbe:
    """The group's committed offsets (read without joining the group), the partitions' first
    offsets (ListOffsets earliest) and their ends: the high watermark a fetch answers with (the
    local broker answers ListOffsets latest wrong; consumer/lag.py). Raises KafkaError when the
    broker does not answer within `timeout_s`."""

    def __init__(self, settings: Settings, group_id: str, timeout_s: float, frame_bytes: int) -> None:
        self.settings, self.timeout_s, self.frame_bytes = settings, timeout_s, frame_bytes
        self._group = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            group_id=group_id,  # OffsetFetch only: it never subscribes, so it never joins the group
            client_id=f"sentencify-gap-probe-{group_id}",
            enable_auto_commit=False,
            request_timeout_ms=int(timeout_s * 1000),
            api_version_auto_timeout_ms=int(timeout_s * 1000),
            # kafka-python insists on request timeout > session timeout, though this one never has a session.
            session_timeout_ms=int(timeout_s * 1000) - 1,
            heartbeat_interval_ms=min(3000, int(timeout_s * 1000) // 3),
            **kafka_security(settings),
        )

    def committed(self, partitions: list[TP]) -> dict[TP, int | None]:
        """The group's committed offsets (None: none)."""
        parts = [TopicPartition(t, p) for t, p in partitions]
        # One OffsetFetch for all (what `committed()` sends for one partition at a time).
        known = self._group._coordinator.fetch_committed_offsets(parts, timeout_ms=int(self.timeout_s * 1000)) or {}
        return {(tp.topic, tp.partition): (known[tp].offset if tp in known and known[tp].offset >= 0 else None) for tp in parts}

    def read(self, partitions: list[TP]) -> dict[TP, PartitionState]:
        parts = [TopicPartition(t, p) for t, p in partitions]
        committed = self._group._coordinator.fetch_committed_offsets(parts, timeout_ms=int(self.timeout_s * 1000))
        if committed is None:
            raise KafkaTimeoutError(f"committed offsets not answered within {self.timeout_s}s")
        earliest = {tp: int(o or 0) for tp, o in self._group.beginning_offsets(parts).items()}
        ends = self._ends(parts, earliest)
        out = {}
        for tp in parts:
            known = committed.get(tp)
            first = earliest.get(tp, 0)
            out[(tp.topic, tp.partition)] = PartitionState(
                known.offset if known is not None and known.offset >= 0 else None, first, max(first, ends.get(tp, first))
            )
        return out

    def _ends(self, parts: list[TopicPartition], earliest: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """One fetch from each partition's first offset (at most one record batch each): its answer
        carries the high watermark. A fresh client, so no high watermark is an old one."""
        probe = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
            group_id=None,
            client_id="sentencify-gap-probe-ends",
            enable_auto_commit=False,
            request_timeout_ms=int(self.timeout_s * 1000),
            api_version_auto_timeout_ms=int(self.timeout_s * 1000),
            max_partition_fetch_bytes=1,
            fetch_max_bytes=1,
            max_poll_records=1_000_000,
            fetch_max_wait_ms=50,
            receive_message_max_bytes=self.frame_bytes,
            **kafka_security(self.settings),
        )
        try:
            probe.assign(parts)
            for tp in parts:
                probe.seek(tp, earliest.get(tp, 0))
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                probe.poll(timeout_ms=50)
                ends = {tp: probe.highwater(tp) for tp in parts}
                if all(hw is not None for hw in ends.values()):
                    return {tp: int(hw) for tp, hw in ends.items() if hw is not None}
            raise KafkaTimeoutError(f"partition ends not answered within {self.timeout_s}s")
        finally:
            probe.close(autocommit=False, timeout_ms=1000)

    def close(self) -> None:
        try:
            self._group.close(autocommit=False, timeout_ms=1000)
        except Exception as exc:  # noqa: BLE001 (closing a probe of an unreachable broker)
            log.debug("gap probe not closed cleanly", extra={"fields": {"error": str(exc)[:200]}})

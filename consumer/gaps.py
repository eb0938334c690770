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
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from consumer.lag import EndOffsets
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
    offsets (ListOffsets earliest) and their ends (lag.EndOffsets: the fetch's high watermark, as
    the local broker answers ListOffsets latest wrong). Raises KafkaError when the broker does
    not answer within `timeout_s`."""

    def __init__(self, settings: Settings, group_id: str, timeout_s: float, frame_bytes: int) -> None:
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
        self._ends = EndOffsets(settings, timeout_s, frame_bytes)
        self._timeout_ms = int(timeout_s * 1000)

    def read(self, partitions: list[TP]) -> dict[TP, PartitionState]:
        parts = [TopicPartition(t, p) for t, p in partitions]
        committed = {tp: self._group.committed(tp, timeout_ms=self._timeout_ms) for tp in parts}
        earliest = self._group.beginning_offsets(parts)
        ends = self._ends.read(partitions)
        out = {}
        for tp in parts:
            key = (tp.topic, tp.partition)
            first = int(earliest.get(tp) or 0)
            out[key] = PartitionState(committed[tp], first, max(first, ends.get(key, 0)))
        return out

    def close(self) -> None:
        for close in (lambda: self._group.close(autocommit=False, timeout_ms=1000), self._ends.close):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 (closing a probe of an unreachable broker)
                log.debug("gap probe not closed cleanly", extra={"fields": {"error": str(exc)[:200]}})

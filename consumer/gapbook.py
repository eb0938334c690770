"""The consumer's side of ingestion gaps: it says so at once (an ERROR line, health), records each
gap once in MongoDB (`ingestion_gaps`, counted in `sentencify_ingestion_gap_records_total` when
first recorded), keeps its own memory of committed positions (`ingestion_positions`), and shows
`degraded: ...` while any gap is unacknowledged (`sentencify gaps ack`, from any process).

MongoDB is written from a thread of its own: a MongoDB outage delays the record (retried every
`every_s`), never the loop, and never loses it (the gap stays queued; its ERROR line is already out).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from pymongo.database import Database
from pymongo.errors import PyMongoError

from consumer.metrics import Metrics
from consumer.offsets import TP
from sentencify import gaps as store
from sentencify.gaps import Gap, Remembered
from sentencify.logs import kv

log = logging.getLogger("sentencify.consumer")

GAP_RECORDS = "sentencify_ingestion_gap_records_total"
HEALTH_KEY = "gaps"


class GapBook:
    """Delivery: every gap found is recorded (retried until MongoDB takes it); once per id."""

    def __init__(self, db: Database, metrics: Metrics, every_s: float = 2.0) -> None:
        self.db, self.metrics, self.every_s = db, metrics, every_s
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Gap, datetime]] = {}
        self._positions: dict[TP, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._last_ok = True  # the last write to MongoDB succeeded
        self._thread = threading.Thread(target=self._run, name="gap-book", daemon=True)

    def start(self) -> GapBook:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and write what is left once, unless MongoDB failed the last write or is
        still busy with one (shutdown is bounded; an unwritten gap is found again after the
        restart, as its partition's offset was not committed past it)."""
        self._stop.set()
        self._thread.join(timeout=0.5)
        if not self._thread.is_alive() and self._last_ok:
            self._flush(final=True)

    def pending_partitions(self) -> set[TP]:
        """Partitions with a gap found but not yet recorded: their offsets must not be committed
        past it, or a restart would never find it again."""
        with self._lock:
            return {(g.topic, g.partition) for g, _ in self._pending.values()}

    # -- from the loop ------------------------------------------------------------------------------

    def found(self, gap: Gap, start: int) -> None:
        """A gap was found; reading goes on from `start` (the first offset that still exists)."""
        log.error(
            "records lost before ingestion",
            extra=kv(
                topic=gap.topic,
                partition=gap.partition,
                first_missing_offset=gap.first_offset,
                last_missing_offset=gap.last_offset if gap.last_offset is not None else "unknown",
                count=gap.count if gap.count is not None else f"unknown (at least {gap.at_least})",
                reason=gap.reason,
                resumed_at=start,
                detail=(
                    f"{gap.describe()} can never be read: {store.WHY[gap.reason]}; Kafka no longer has them, so "
                    "replaying cannot bring them back - only their producer can send them again. Reading goes on "
                    f"from offset {start}. Acknowledge with `sentencify gaps ack` once handled."
                ),
            ),
        )
        with self._lock:
            self._pending[gap.id] = (gap, datetime.now(UTC))
            self.metrics.degraded[HEALTH_KEY] = (
                store.health_line(
                    [{"topic": g.topic, "count": g.count, "at_least": g.at_least} for g, _ in self._pending.values()]
                )
                or ""
            )

    def remember(self, committed: dict[TP, int], ends: dict[TP, int]) -> None:
        """Offsets just committed, and each partition's end as last seen (written within `every_s`)."""
        with self._lock:
            for tp, offset in committed.items():
                if offset > 0:  # "nothing read yet" tells nothing a later check could use
                    self._positions[tp] = (offset, max(offset, ends.get(tp, 0)))

    def remembered(self, partitions: list[TP]) -> dict[TP, Remembered]:
        """What was recorded before (in MongoDB), overlaid with what is not written yet. Raises PyMongoError."""
        out = store.remembered(self.db, partitions)
        with self._lock:
            for tp in partitions:
                if tp in self._positions:
                    out[tp] = Remembered(*self._positions[tp])
        return out

    # -- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._flush()

    def _flush(self, final: bool = False) -> None:
        with self._lock:
            pending, positions = dict(self._pending), dict(self._positions)
            self._positions.clear()
        try:
            for gap_id, (gap, found_at) in pending.items():
                if store.record(self.db, gap, found_at):
                    self.metrics.inc(GAP_RECORDS, gap.count if gap.count is not None else gap.at_least, topic=gap.topic)
                with self._lock:
                    self._pending.pop(gap_id, None)
            store.remember(self.db, positions, datetime.now(UTC))
            positions = {}
            open_gaps = store.unacknowledged(self.db)
        except PyMongoError as exc:
            with self._lock:  # newer positions win; these are written next time
                self._positions = {**positions, **self._positions}
            (log.warning if final else log.debug)("ingestion gaps not written yet", extra=kv(error=str(exc)[:200]))
            self._last_ok = False
            return
        self._last_ok = True
        with self._lock:
            line = store.health_line(
                open_gaps + [{"topic": g.topic, "count": g.count, "at_least": g.at_least} for g, _ in self._pending.values()]
            )
            if line:
                self.metrics.degraded[HEALTH_KEY] = line
            else:
                self.metrics.degraded.pop(HEALTH_KEY, None)

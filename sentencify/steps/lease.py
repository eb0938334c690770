"""One run of a step at a time: a lease in MongoDB, renewed while the run works.

Runs of one step may be started together (the hourly run, a backfill, a CLI run); the lease makes
them run one after the other, so none publishes a session, profile, point or view row from data
older than what another already published. A holder that dies stops renewing and its lease
expires after `ttl`; a holder that lost its lease (paused past the ttl) fails before publishing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

log = logging.getLogger("sentencify.lease")

LEASES = "pipeline_leases"


class LeaseLost(RuntimeError):
    """Another run took the step's lease (this one stopped renewing it): nothing more may be published."""


class LeaseTimeout(RuntimeError):
    """Another run held the step's lease for longer than this run would wait."""


class StepLease:
    """Delivery: while held, no other run of the step holds it; `check()` raises once it is lost."""

    def __init__(self, db: Database, step: str, *, ttl_s: float = 60.0, wait_s: float = 3 * 3600.0, poll_s: float = 0.5) -> None:
        self.db, self.step = db, step
        self.ttl = timedelta(seconds=ttl_s)
        self.wait_s, self.poll_s = wait_s, poll_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lost = threading.Event()
        self._done = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> StepLease:
        deadline = time.monotonic() + self.wait_s
        waiting_logged = False
        while not self._try_acquire():
            if time.monotonic() > deadline:
                raise LeaseTimeout(
                    f"another run of step {self.step!r} held its lease for over {self.wait_s:.0f}s "
                    f"({self.current()}); it is still working or died less than a lease ago"
                )
            if not waiting_logged:
                log.info("waiting for another run of the step", extra={"fields": {"step": self.step, "holder": self.current()}})
                waiting_logged = True
            time.sleep(self.poll_s)
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{self.step}", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._renewer is not None:
            self._renewer.join(5)
        self.db[LEASES].delete_one({"_id": self.step, "holder": self.holder})

    def check(self) -> None:
        if self._lost.is_set():
            raise LeaseLost(
                f"the lease of step {self.step!r} was lost (this run stalled for over "
                f"{self.ttl.total_seconds():.0f}s); nothing more is published, the retry redoes it"
            )

    def current(self) -> str:
        doc = self.db[LEASES].find_one({"_id": self.step}) or {}
        return f"held by {doc.get('holder', 'nobody')} until {doc.get('expires_at', '-')}"

    def _try_acquire(self) -> bool:
        now = datetime.now(UTC)
        try:
            self.db[LEASES].update_one(
                {"_id": self.step, "$or": [{"expires_at": {"$lt": now}}, {"holder": self.holder}]},
                {"$set": {"holder": self.holder, "acquired_at": now, "expires_at": now + self.ttl}},
                upsert=True,
            )
            return True
        except DuplicateKeyError:  # held by another run, and not expired
            return False

    def _renew(self) -> None:
        every = self.ttl.total_seconds() / 3
        while not self._done.wait(every):
            try:
                result = self.db[LEASES].update_one(
                    {"_id": self.step, "holder": self.holder},
                    {"$set": {"expires_at": datetime.now(UTC) + self.ttl}},
                )
            except Exception as exc:  # noqa: BLE001 (a failed renewal is retried; the ttl leaves room)
                log.warning("lease renewal failed", extra={"fields": {"step": self.step, "error": str(exc)[:200]}})
                continue
            if result.matched_count == 0:
                self._lost.set()
                return

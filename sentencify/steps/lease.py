"""One run of a step at a time: a lease in MongoDB, judged by MongoDB's clock, with a fencing token.

Runs of one step may be started together (the hourly run, a backfill, a CLI run); the lease makes
them run one after the other, so none publishes a session, profile, point or view row from data
older than what another already published (pipeline.md "Windows and late data").

The lease document `pipeline_leases/{step}`: holder, token, acquired_at, expires_at. Every
decision compares `expires_at` with MongoDB's `$$NOW` inside the one update that makes it, so a
host whose clock runs ahead cannot take a live lease, and no host's clock is ever read:
- take-over: only when `expires_at` is past; sets a new holder and token =
  max(previous token + 1, MongoDB's time in ms), so the token grows on every take-over;
- renewal (every ttl/3): only while this holder and token hold it and it has not expired; a
  renewal that fails, or that cannot be made within the ttl, marks the run's fence lost;
- release: expires it now and clears the holder, keeping the token (the document stays, so
  tokens never go back).
`StepLease.fence` (sentencify.steps.fence) is what every store write of the run checks.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from sentencify.errors import RunConflict
from sentencify.steps.fence import DB_NOW_MS, LEASES, Fence, LeaseLost
from sentencify.steps.publish import supports_transactions

log = logging.getLogger("sentencify.lease")

__all__ = ["LEASES", "LeaseLost", "LeaseTimeout", "StepLease"]

WRITE_CONFLICT = 112
_EXPIRED = {"$expr": {"$lte": [{"$ifNull": [{"$toLong": "$expires_at"}, 0]}, DB_NOW_MS]}}


class LeaseTimeout(RunConflict, RuntimeError):
    """Another run held the step's lease for longer than this run would wait."""


class StepLease:
    """Delivery: while held, no other run of the step holds it; `fence` refuses writes once it is lost.

    `ttl_s`: LEASE_TTL_S (seconds without renewal before another run may take over);
    `wait_s`: how long to wait for another run's lease before LeaseTimeout."""

    def __init__(self, db: Database, step: str, *, ttl_s: float = 60.0, wait_s: float = 3 * 3600.0, poll_s: float = 0.5) -> None:
        self.db, self.step = db, step
        self.ttl_ms = int(ttl_s * 1000)
        self.wait_s, self.poll_s = wait_s, poll_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.fence: Fence | None = None
        self.acquired_at: datetime | None = None  # MongoDB's time when this run took the lease
        self.document: dict = {}  # the lease document as this run took it
        self._done = threading.Event()
        self._renewer: threading.Thread | None = None
        self._transactions: bool | None = None  # whether the server has transactions (asked once)

    def __enter__(self) -> StepLease:
        deadline = time.monotonic() + self.wait_s
        waiting_logged = False
        while not self._try_acquire():
            if time.monotonic() > deadline:
                raise LeaseTimeout(
                    f"another run of step {self.step!r} held its lease for over {self.wait_s:.0f}s "
                    f"({self.current()}); it is still working or died less than LEASE_TTL_S ago"
                )
            if not waiting_logged:
                log.info("waiting for another run of the step", extra={"fields": {"step": self.step, "holder": self.current()}})
                waiting_logged = True
            time.sleep(self.poll_s)
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{self.step}", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        if self._renewer is not None:
            self._renewer.join(5)
        assert self.fence is not None
        try:
            self.db[LEASES].update_one(
                {"_id": self.step, "holder": self.holder, "token": self.fence.token},
                [{"$set": {"holder": None, "expires_at": "$$NOW", "released_at": "$$NOW"}}],
            )
        except PyMongoError as exc:  # the lease then expires by itself after the ttl
            log.warning("lease release failed", extra={"fields": {"step": self.step, "error": str(exc)[:200]}})

    def check(self) -> None:
        """Raise LeaseLost unless this run still holds the lease (by MongoDB's clock)."""
        assert self.fence is not None
        self.fence.check()

    def current(self) -> str:
        doc = self.db[LEASES].find_one({"_id": self.step}) or {}
        return f"held by {doc.get('holder') or 'nobody'} until {doc.get('expires_at', '-')}"

    def _try_acquire(self) -> bool:
        """One take-over attempt, inside a transaction where the server has them: a run killed -9 in the
        middle of a publish leaves its transaction holding the lease document until the server aborts it
        (transactionLifetimeLimitSeconds, 60 s). A plain update would wait on that lock - on the local
        server for ever, as it reaps an idle transaction only when another transaction command comes -
        while a transaction's write fails at once with a WriteConflict, and is tried again next poll."""
        if self._transactions is None:
            self._transactions = supports_transactions(self.db)
        if not self._transactions:
            doc = self._take_over(None)
        else:
            try:
                with self.db.client.start_session() as session:
                    session.start_transaction()
                    doc = self._take_over(session)
                    if doc is None:
                        session.abort_transaction()
                    else:
                        session.commit_transaction()
            except OperationFailure as exc:
                if exc.code == WRITE_CONFLICT or exc.has_error_label("TransientTransactionError"):
                    return False  # another transaction holds the lease document (a live or a dead run's)
                raise
        if doc is None:
            return False
        self.fence = Fence(self.db[LEASES], self.step, self.holder, int(doc["token"]), self.db.name)
        self.acquired_at = doc["acquired_at"]
        self.document = doc
        log.info("lease taken", extra={"fields": {"step": self.step, "holder": self.holder, "token": self.fence.token}})
        return True

    def _takeable(self) -> dict:
        """Which lease document a take-over may change: one whose lease has expired (by MongoDB's clock)."""
        return {"_id": self.step, **_EXPIRED}

    def _take_over(self, session: ClientSession | None) -> dict | None:
        """The lease document once taken, or None while another run holds it (by the server's clock)."""
        try:
            return self.db[LEASES].find_one_and_update(
                self._takeable(),
                [
                    {
                        "$set": {
                            "holder": self.holder,
                            "token": {"$max": [{"$add": [{"$ifNull": ["$token", 0]}, 1]}, DB_NOW_MS]},
                            "acquired_at": "$$NOW",
                            "expires_at": {"$add": ["$$NOW", self.ttl_ms]},
                        }
                    }
                ],
                upsert=True,
                return_document=ReturnDocument.AFTER,
                session=session,
            )
        except DuplicateKeyError:
            return None

    def _renew(self) -> None:
        """Every ttl/3; a failed renewal is retried sooner, and once none succeeded within the ttl
        (timed from when the last good one was sent) the fence is marked lost."""
        assert self.fence is not None
        fence, ttl_s = self.fence, self.ttl_ms / 1000
        proven = time.monotonic()  # the lease was good until at least proven + ttl
        every = ttl_s / 3
        while not self._done.wait(every):
            sent = time.monotonic()
            try:
                result = self.db[LEASES].update_one(
                    {**fence.held_filter()},
                    [{"$set": {"expires_at": {"$add": ["$$NOW", self.ttl_ms]}, "renewed_at": "$$NOW"}}],
                )
            except PyMongoError as exc:
                log.warning("lease renewal failed", extra={"fields": {"step": self.step, "error": str(exc)[:200]}})
                if time.monotonic() - proven >= ttl_s:
                    fence.mark_lost(f"no renewal succeeded for {ttl_s:.0f}s (LEASE_TTL_S): {str(exc)[:120]}")
                    return
                every = min(ttl_s / 10, max(0.0, proven + ttl_s - time.monotonic()))
                continue
            if result.matched_count == 0:
                fence.mark_lost(f"the renewal found it taken over or expired ({fence.current()})")
                log.warning("lease lost", extra={"fields": {"step": self.step, "holder": self.holder}})
                return
            proven, every = sent, ttl_s / 3

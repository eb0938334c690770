"""Broker health: is Kafka answering, and if not, why (unreachable, or refusing our credentials).

kafka-python does not raise connection or authentication failures from `poll()`: it logs them
(logger `kafka.conn`, level ERROR) and reconnects with backoff. So the health is judged from the
calls that do report (a commit, the lag probe's offset requests: each bounded by a timeout) and
the reason is taken from what kafka-python logged. Neither state is cured by a restart, so both
are `degraded` (alive), never `stalled`.
"""

from __future__ import annotations

import logging
import threading
import time

from kafka.conn import ConnectionStates
from kafka.errors import SaslAuthenticationFailedError

KAFKA_CONN_LOGGER = "kafka.conn"


class BrokerHealth(logging.Handler):
    """Delivery: none (observation only). Thread-safe: the loop and the lag probe report to it."""

    def __init__(self, grace_s: float = 10.0) -> None:
        super().__init__(level=logging.ERROR)
        self.grace_s = grace_s  # failures for this long, with no answer between, before the broker counts as away
        self._lock = threading.Lock()
        self._ok_at = time.monotonic()
        self._failed_at: float | None = None
        self._failing_since = 0.0  # the first failure after the last answer
        self._failure = ""
        self._auth_error: tuple[float, str] | None = None  # (when, what kafka-python logged)

    # -- what the calls say ----------------------------------------------------------------------

    def ok(self) -> None:
        """A broker call answered (a commit, an offset request, a group join)."""
        with self._lock:
            self._ok_at = time.monotonic()

    def failed(self, what: str) -> None:
        """A broker call failed or timed out; `what` names the call and the error."""
        with self._lock:
            now = time.monotonic()
            if self._failed_at is None or self._failed_at < self._ok_at:
                self._failing_since = now
            self._failed_at, self._failure = now, what

    # -- what kafka-python logged ----------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the last login or TLS failure kafka-python logged while closing a connection."""
        if not (isinstance(record.msg, str) and "Closing connection" in record.msg and isinstance(record.args, tuple)):
            return
        conn, error = (*record.args, None, None)[:2]
        # A real Kafka answers a bad login with an error code; the local broker drops the connection
        # mid-handshake. Either way the connection was still authenticating (SASL) or in its TLS
        # handshake when it closed: the broker refused our security settings, not our requests.
        state = str(getattr(conn, "state", ""))
        if isinstance(error, SaslAuthenticationFailedError) or state in (
            ConnectionStates.AUTHENTICATING,
            ConnectionStates.HANDSHAKE,
        ):
            with self._lock:
                self._auth_error = (time.monotonic(), f"{type(error).__name__}: {error}" if error else "connection closed")
                self._failed_at, self._failure = self._auth_error[0], "security refused"

    def install(self) -> BrokerHealth:
        logging.getLogger(KAFKA_CONN_LOGGER).addHandler(self)
        return self

    def uninstall(self) -> None:
        logging.getLogger(KAFKA_CONN_LOGGER).removeHandler(self)

    # -- the verdict -----------------------------------------------------------------------------

    def degraded(self, security: str) -> str | None:
        """None while the last broker call answered; otherwise a one-line reason for `/healthz`.

        `security` describes the login the client uses (protocol, mechanism, user; never a password)."""
        with self._lock:
            if self._failed_at is None or self._failed_at < self._ok_at:
                return None
            for_s = time.monotonic() - self._failed_at
            if self._auth_error is not None and self._auth_error[0] > self._ok_at:
                return (
                    f"Kafka refused our login or TLS settings ({security}): {self._auth_error[1][:200]}; fix the "
                    "KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* settings (a restart with the same ones will not help)"
                )
            if time.monotonic() - self._failing_since < self.grace_s:  # one slow answer is not an outage
                return None
            return f"Kafka broker not answering ({self._failure[:200]}; last failure {for_s:.0f}s ago); retrying"

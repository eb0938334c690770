"""Status: the consumer's lag and counts in Redis, for the dashboard's pipeline state.

Two keys: `sentencify:consumer:{group}:{host}:{pid}` says a consumer is alive (it expires when
the consumer stops), and the hash `sentencify:consumer_lag:{group}` keeps the last lag reported
for every partition (no expiry: a group whose consumers all stopped still shows its lag). The
partition's current owner is the last to write its field, so the hash is never double-counted.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import UTC, datetime

from sentencify import contract

log = logging.getLogger("sentencify.consumer")

KEY_PREFIX = contract.CONSUMER_STATUS_KEY_PREFIX
LAG_KEY_PREFIX = contract.CONSUMER_LAG_KEY_PREFIX
TTL_S = 120  # a consumer that stopped publishing disappears from the dashboard
EVERY_S = 5.0


class StatusPublisher:
    """Delivery: best effort; a Redis failure is logged and never touches ingestion."""

    def __init__(self, redis_url: str | None, group: str) -> None:
        self.group = group
        self.key = f"{KEY_PREFIX}{group}:{socket.gethostname()}:{os.getpid()}"
        self.lag_key = f"{LAG_KEY_PREFIX}{group}"
        self._redis = None
        self._last = 0.0
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)

    def maybe_publish(self, lag_by_partition: dict[str, int], counts: dict[str, int], force: bool = False) -> None:
        now = time.monotonic()
        if self._redis is None or (now - self._last < EVERY_S and not force):
            return
        self._last = now
        updated_at = datetime.now(UTC).isoformat()
        snapshot = {
            "group": self.group,
            "consumer": self.key[len(KEY_PREFIX) :],
            "lag": sum(lag_by_partition.values()),
            "lag_by_partition": lag_by_partition,
            **counts,
            "updated_at": updated_at,
        }
        per_partition: dict[
            bytes | bytearray | memoryview | str | int | float, bytes | bytearray | memoryview | str | int | float
        ] = {
            p: json.dumps({"lag": lag, "reported_at": updated_at, "consumer": snapshot["consumer"]})
            for p, lag in lag_by_partition.items()
        }
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(self.key, json.dumps(snapshot), ex=TTL_S)
            if per_partition:
                pipe.hset(self.lag_key, mapping=per_partition)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 (status is optional; ingestion goes on)
            log.debug("status not published", extra={"fields": {"error": str(exc)[:200]}})

    def close(self) -> None:
        if self._redis is not None:
            try:
                self._redis.delete(self.key)
            except Exception as exc:  # noqa: BLE001 (status is optional; the key expires by itself)
                log.debug("status key not deleted", extra={"fields": {"error": str(exc)[:200]}})
            self._redis.close()

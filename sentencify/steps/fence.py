"""The fencing token of a step's lease, and the guard each store write of a run goes through.

A run publishes only while it holds its step's lease (sentencify.steps.lease). Holding is judged by
MongoDB's clock (`$$NOW`), never a host's, and proven at each write, so a run that froze past its
lease (a paused VM, SIGSTOP, a lost network) publishes nothing more once it resumes
(pipeline.md "Windows and late data"; M. Kleppmann, "How to do distributed locking", 2016):
- MongoDB: the write's transaction first writes the lease document, on the condition that this run
  still holds it. A take-over of the lease then waits for the transaction, or the transaction
  fails with a write conflict; either way no write of a run lands after another run took over.
  Without transactions (a standalone server) the lease is checked right before each bulk write.
- PostgreSQL: the transaction ends by raising `sentencify.step_fences`' token for the step (a
  row lock held to the commit; refused when a newer token is there) and checking the lease.
- Redis: one Lua script per batch compares the step's fence key with the token and writes only
  when it is not newer; the lease is checked right before each batch.
- Qdrant has no conditional write: the lease is checked right before and right after each batch;
  found lost after it, the batch may have landed after a newer run's, so the lease document asks
  the step's next run to reconcile every point from MongoDB (`reconcile_requests`, runner).
Each run also raises the Redis and PostgreSQL tokens when it opens those stores (`claim_*`), before
it reads, so a write of an older holder that resumes later is refused there.

The token is max(previous + 1, MongoDB's time in ms) at each take-over (lease.py): it grows on every
take-over, and also after the lease collection was lost, so the stores' tokens never stay ahead.
Delivery: a write goes through only if no newer holder has written, or claimed, that store.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from pymongo.client_session import ClientSession
from pymongo.collection import Collection

from sentencify.errors import RunConflict, ServiceError
from sentencify.stores import batching, redis_json

log = logging.getLogger("sentencify.fence")

LEASES = "pipeline_leases"
# MongoDB's time, in ms since the epoch. `$toLong` on both sides: a date comparison with `$$NOW`
# directly is wrong on the local server (it compares naive with aware datetimes and is always false).
DB_NOW_MS = {"$toLong": "$$NOW"}
LIVE = {"$expr": {"$gt": [{"$ifNull": [{"$toLong": "$expires_at"}, 0]}, DB_NOW_MS]}}  # not expired, by the DB's clock

# Redis: compare-and-write in one script. KEYS[1] the fence key, ARGV[1] the token; then pairs.
_REDIS_FENCED_SET = """
local held = redis.call('GET', KEYS[1]) or '0'
local current, token = tonumber(held), tonumber(ARGV[1])
if current > token then
  return redis.error_reply('FENCED a newer run of the step holds token ' .. held)
end
if current < token then redis.call('SET', KEYS[1], ARGV[1]) end
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i]) end
return #KEYS - 1
"""

_PG_FENCE_DDL = """create schema if not exists sentencify;
create table if not exists sentencify.step_fences (
  scope text not null, step text not null, token bigint not null, updated_at timestamptz not null default now(),
  primary key (scope, step))"""
_PG_RAISE = """insert into sentencify.step_fences (scope, step, token) values (%s, %s, %s)
on conflict (scope, step) do update set token = excluded.token, updated_at = now()
where sentencify.step_fences.token <= excluded.token returning token"""


# The same for deletes: KEYS[1] the fence key, ARGV[1] the token, KEYS[2..] the keys to delete.
_REDIS_FENCED_DEL = """
local held = redis.call('GET', KEYS[1]) or '0'
local current, token = tonumber(held), tonumber(ARGV[1])
if current > token then
  return redis.error_reply('FENCED a newer run of the step holds token ' .. held)
end
if current < token then redis.call('SET', KEYS[1], ARGV[1]) end
local n = 0
for i = 2, #KEYS do n = n + redis.call('DEL', KEYS[i]) end
return n
"""


REDIS_BATCH_KEYS = 1000  # keys per Redis request, within its byte bound
REDIS_COMMAND_BYTES = 256  # the request's own arguments: EVALSHA, the script's digest, the fence key and token


class RedisFull(ServiceError, RuntimeError):
    """Redis refused a write for want of memory (`maxmemory`): the profiles need an instance with room."""


def _redis_refusal(exc: Exception) -> Exception:
    """Redis's OOM refusal in words that name the setting; any other error as it is."""
    # redis-py strips the error code: OutOfMemoryError("command not allowed when used memory > 'maxmemory'")
    if type(exc).__name__ != "OutOfMemoryError" and "OOM" not in str(exc) and "maxmemory" not in str(exc):
        return exc
    return RedisFull(
        "Redis refused the profiles: out of memory (its maxmemory is reached and its maxmemory-policy evicts nothing "
        "it may); give the profiles' Redis (REDIS_URL) more maxmemory, or an instance of its own with "
        "maxmemory-policy noeviction (docs/operations.md, 'Redis for the profiles')"
    )


class LeaseLost(RunConflict, RuntimeError):
    """This run no longer holds its step's lease (it stalled past it, or a newer run took over):
    nothing more may be published; the retry (or the next run) redoes the work."""


class Fence:
    """One holder's fencing token for one step, and the guarded write of each store.

    `leases`: the `pipeline_leases` collection; `scope`: the MongoDB database's name (the Redis
    and PostgreSQL fences are shared by every deployment that uses the same server)."""

    def __init__(self, leases: Collection, step: str, holder: str, token: int, scope: str) -> None:
        self.leases, self.step, self.holder, self.token, self.scope = leases, step, holder, token, scope
        self._lost_reason: str | None = None

    # -- the lease itself, judged by MongoDB's clock
    def held_filter(self) -> dict:
        return {"_id": self.step, "holder": self.holder, "token": self.token, **LIVE}

    def mark_lost(self, reason: str) -> None:
        """The renewer could not prove the lease within its ttl: every later check fails."""
        self._lost_reason = reason

    def lost(self, detail: str) -> LeaseLost:
        return LeaseLost(
            f"run of step {self.step!r} (token {self.token}) lost its lease: {detail}; "
            "nothing more is published, a retry or the next run redoes it"
        )

    def check(self) -> None:
        """Raise LeaseLost unless this run still holds the lease now (one MongoDB round trip)."""
        if self._lost_reason:
            raise self.lost(self._lost_reason)
        if self.leases.find_one(self.held_filter(), {"_id": 1}) is None:
            raise self.lost(f"another run took it over or it expired ({self.current()})")

    def request_reconcile(self) -> None:
        """A write of this (lost) run may have landed after a newer run's, in a store with no
        conditional write (Qdrant): the step's next run reconciles everything (sentencify.steps.runner)."""
        self.leases.update_one({"_id": self.step}, {"$inc": {"reconcile_requests": 1}})
        log.warning(
            "a write may have landed after the lease was lost: the next run reconciles", extra={"fields": {"step": self.step}}
        )

    def current(self) -> str:
        doc = self.leases.find_one({"_id": self.step}) or {}
        return f"now held by {doc.get('holder') or 'nobody'} with token {doc.get('token')} until {doc.get('expires_at', '-')}"

    # -- MongoDB
    def guard_mongo(self, session: ClientSession | None) -> None:
        """Inside a transaction: write the lease document on the condition that it is still ours."""
        if self._lost_reason:
            raise self.lost(self._lost_reason)
        if session is None:
            self.check()
            return
        written = self.leases.update_one(self.held_filter(), {"$currentDate": {"fenced_write_at": True}}, session=session)
        if written.matched_count == 0:
            raise self.lost("another run took it over or it expired")

    # -- Redis
    def redis_key(self) -> str:
        return f"sentencify:fence:{self.scope}:{self.step}"

    def claim_redis(self, client: Any) -> None:
        """Raise the step's Redis token to ours before reading (LeaseLost when a newer one is there)."""
        self.redis_set(client, {}, check=False)

    def redis_set(
        self, client: Any, values: dict[str, str], *, check: bool = True, max_bytes: int = batching.REDIS_REQUEST_BYTES
    ) -> None:
        """SET every key of `values`, only if no newer token wrote this step's keys: one script per
        request of at most `max_bytes` bytes (REDIS_MAX_REQUEST_BYTES; stores.batching), each
        preceded by the lease check; a request Redis refuses or times out on is sent in halves.
        Raises LeaseLost, and RedisFull when Redis is out of memory."""
        if not values:
            self._redis_write(client, [], check)
            return
        for batch in batching.batches(values.items(), REDIS_BATCH_KEYS, max_bytes - REDIS_COMMAND_BYTES, redis_json.set_bytes):
            batching.write_split(batch, lambda part: self._redis_write(client, part, check), redis_json.maybe_too_large)

    def _redis_write(self, client: Any, items: list[tuple[str, str]], check: bool) -> None:
        import redis

        if check:
            self.check()
        try:
            script = client.register_script(_REDIS_FENCED_SET)
            script(keys=[self.redis_key(), *(k for k, _ in items)], args=[self.token, *(v for _, v in items)])
        except redis.exceptions.ResponseError as exc:
            if "FENCED" in str(exc):
                raise self.lost(str(exc)) from None
            refusal = _redis_refusal(exc)
            if refusal is exc:
                raise
            raise refusal from None

    def redis_delete(self, client: Any, keys: list) -> None:
        """DEL these keys in one script, only if no newer token wrote this step's keys."""
        import redis

        if not keys:
            return
        self.check()
        try:
            client.register_script(_REDIS_FENCED_DEL)(keys=[self.redis_key(), *keys], args=[self.token])
        except redis.exceptions.ResponseError as exc:
            if "FENCED" in str(exc):
                raise self.lost(str(exc)) from None
            raise

    # -- PostgreSQL
    def claim_postgres(self, conn: Any) -> None:
        """Raise the step's PostgreSQL token to ours, in a transaction of its own (the fence table
        is created if missing)."""
        try:
            with conn.cursor() as cur:
                cur.execute(_PG_FENCE_DDL)
                self._raise_pg(cur)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def guard_postgres(self, cur: Any) -> None:
        """Last statement of a transaction: raise the token (the row stays locked to the commit:
        a newer holder's transaction waits, an older one is refused), then check the lease."""
        self._raise_pg(cur)
        self.check()

    def _raise_pg(self, cur: Any) -> None:
        cur.execute(_PG_RAISE, (self.scope, self.step, self.token))
        if cur.fetchone() is None:
            raise self.lost("a newer run of the step wrote PostgreSQL")


class FencedQdrant:
    """A Qdrant client whose point writes each check the lease first (Qdrant has no conditional
    write); everything else is the client's own. The runner hands it to the vectors step."""

    WRITES = frozenset(
        {
            "upsert",
            "upload_points",
            "upload_collection",
            "batch_update_points",
            "delete",
            "set_payload",
            "overwrite_payload",
            "delete_payload",
            "clear_payload",
            "update_vectors",
            "delete_vectors",
        }
    )

    def __init__(self, client: Any, fence: Fence) -> None:
        self._client, self._fence = client, fence

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in self.WRITES:
            return attr

        def fenced(*args: Any, **kwargs: Any) -> Any:
            self._fence.check()
            try:
                return attr(*args, **kwargs)
            finally:
                self._checked_after()

        return fenced

    def _checked_after(self) -> None:
        """The lease lost by the time the write returned (a freeze between the check and the write):
        the write may have landed after a newer run's, so the step's next run reconciles every point."""
        try:
            self._fence.check()
        except LeaseLost:
            self._fence.request_reconcile()
            raise


class FencedPostgres:
    """A PostgreSQL connection (psycopg2 or psycopg 3) whose every committed transaction ends with
    the fence's guard (`Fence.guard_postgres`): `with conn:` (psycopg2), `with conn.transaction():`
    (psycopg 3) and `conn.commit()`. Everything else is the connection's own. The runner hands it
    to the views step, so each of its transactions is fenced whatever its shape."""

    def __init__(self, conn: Any, fence: Fence) -> None:
        self._conn, self._fence = conn, fence

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)  # AttributeError as the connection's: `transaction` on psycopg2
        if name == "transaction":
            return lambda *args, **kwargs: _FencedTransaction(self, attr(*args, **kwargs))
        return attr

    def _guard(self) -> None:
        with self._conn.cursor() as cur:
            self._fence.guard_postgres(cur)

    def commit(self) -> None:
        self._guard()
        self._conn.commit()

    def __enter__(self) -> Any:
        self._conn.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> Any:
        if exc_type is None:
            try:
                self._guard()
            except BaseException as lost:
                self._conn.__exit__(type(lost), lost, lost.__traceback__)  # rolls back
                raise
        return self._conn.__exit__(exc_type, exc, tb)


class _FencedTransaction:
    """psycopg 3's `conn.transaction()` block, with the guard before its commit."""

    def __init__(self, owner: FencedPostgres, inner: Any) -> None:
        self._owner, self._inner = owner, inner

    def __enter__(self) -> Any:
        return self._inner.__enter__()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> Any:
        if exc_type is None:
            try:
                self._owner._guard()
            except BaseException as lost:
                self._inner.__exit__(type(lost), lost, lost.__traceback__)
                raise
        return self._inner.__exit__(exc_type, exc, tb)


class _NoFence(Fence):
    """For direct calls of a step's functions (tests, benches, one-off tools): every write goes through."""

    def __init__(self) -> None:
        super().__init__(None, "-", "-", 0, "-")  # type: ignore[arg-type]

    def check(self) -> None:
        return None

    def request_reconcile(self) -> None:
        return None

    def guard_mongo(self, session: ClientSession | None) -> None:
        return None

    def claim_redis(self, client: Any) -> None:
        return None

    def _redis_write(self, client: Any, items: list[tuple[str, str]], check: bool) -> None:
        import redis

        if items:
            try:
                client.mset(dict(items))
            except redis.exceptions.ResponseError as exc:
                refusal = _redis_refusal(exc)
                if refusal is exc:
                    raise
                raise refusal from None

    def redis_delete(self, client: Any, keys: list) -> None:
        if keys:
            client.delete(*keys)

    def claim_postgres(self, conn: Any) -> None:
        return None

    def guard_postgres(self, cur: Any) -> None:
        return None


NO_FENCE: Fence = _NoFence()

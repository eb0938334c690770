"""No unbounded wait in PostgreSQL: every transaction of the views step has a lock and a statement timeout.

Rule (pipeline.md "Bounds at any size"): a lock held by a reader of the views, or a statement that
does not end, fails the run within a set time, with a message that names what it waited for; the
next run completes the work. Each transaction begins with `SET LOCAL lock_timeout` and `SET LOCAL
statement_timeout` (VIEWS_LOCK_TIMEOUT_S, VIEWS_STATEMENT_TIMEOUT_S; PostgreSQL manual 20.11),
so they end with it and bind nothing else on the connection. A lock timeout (SQLSTATE 55P03)
becomes `LockWaitTimeout`, one line naming the lock and the session that holds it (pg_locks and
pg_stat_activity, read as the lock wait ends); a statement timeout (57014), `StatementTimeout`.
Works on psycopg2 (`with conn:`, the CLI) and psycopg 3 (`with conn.transaction():`, Airflow's
PostgresHook); everything else is the connection's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sentencify.errors import ServiceError

DEFAULT_LOCK_TIMEOUT_S = 60.0
DEFAULT_STATEMENT_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Waits:
    """How long a views transaction may wait for a lock, and run one statement (seconds)."""

    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: Any) -> Waits:
        return cls(settings.views_lock_timeout_s, settings.views_statement_timeout_s)


class LockWaitTimeout(ServiceError, RuntimeError):
    """A views transaction waited past VIEWS_LOCK_TIMEOUT_S for a lock; nothing of it was written."""


class StatementTimeout(ServiceError, RuntimeError):
    """A views statement ran past VIEWS_STATEMENT_TIMEOUT_S; nothing of its transaction was written."""


# The sessions holding a lock on a relation of the schema, oldest transaction first: what a
# waiting statement of the step waits for (it waits for no other session's locks). The same
# relations pg_blocking_pids would name, read once the wait has ended.
_HOLDERS = """select n.nspname || '.' || c.relname, l.mode, a.pid, a.usename, a.application_name, a.state,
       extract(epoch from now() - a.xact_start)::bigint
from pg_locks l join pg_stat_activity a on a.pid = l.pid
  join pg_class c on c.oid = l.relation join pg_namespace n on n.oid = c.relnamespace
where l.granted and l.locktype = 'relation' and l.pid <> pg_backend_pid() and n.nspname = 'sentencify'
order by a.xact_start nulls last, a.pid limit 1"""


def _sqlstate_class(exc: BaseException | None) -> str | None:
    for cls in type(exc).__mro__ if exc is not None else ():
        if cls.__name__ in ("LockNotAvailable", "QueryCanceled"):
            return cls.__name__
    return None


def holder(conn: Any) -> str:
    """The session that holds a lock on the schema's relations the longest, in words (a new
    transaction on `conn`, rolled back); "no session holds one now" when none does."""
    try:
        with conn.cursor() as cur:
            cur.execute(_HOLDERS)
            row = cur.fetchone()
    finally:
        conn.rollback()
    if row is None:
        return "no session holds one now"
    relation, mode, pid, user, app, state, age_s = row
    # Another role's state and age are hidden without pg_read_all_stats (PostgreSQL manual 28.2.3).
    how = f"{state} for {age_s} s" if state is not None else "state hidden: grant pg_read_all_stats"
    return f"{mode} on {relation} held by pid {pid} (user {user}, application {app or '-'}, {how})"


def _translate(conn: Any, exc: BaseException | None, waits: Waits) -> BaseException | None:
    kind = _sqlstate_class(exc)
    if kind == "LockNotAvailable":
        return LockWaitTimeout(
            f"views waited {waits.lock_timeout_s:g} s (VIEWS_LOCK_TIMEOUT_S) for a lock: {holder(conn)}; "
            "nothing written: end that session's transaction, then run again"
        )
    if kind == "QueryCanceled" and "statement timeout" in str(exc):
        return StatementTimeout(
            f"a views statement ran past {waits.statement_timeout_s:g} s (VIEWS_STATEMENT_TIMEOUT_S): nothing of its "
            "transaction was written; raise the setting or look for what slows PostgreSQL"
        )
    return None


def _set_local(cur: Any, waits: Waits) -> None:
    cur.execute(
        "select set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
        (f"{max(1, round(waits.lock_timeout_s * 1000))}ms", f"{max(1, round(waits.statement_timeout_s * 1000))}ms"),
    )


class BoundedPostgres:
    """A psycopg2 or psycopg 3 connection whose every transaction (`with conn:` or
    `with conn.transaction():`) begins with the lock and statement timeouts of `waits`, and whose
    lock timeout is raised as LockWaitTimeout naming the holder."""

    def __init__(self, conn: Any, waits: Waits) -> None:
        self._conn, self._waits = conn, waits

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if name == "transaction":
            return lambda *args, **kwargs: _BoundedTransaction(self, attr(*args, **kwargs))
        return attr

    def __enter__(self) -> Any:
        self._conn.__enter__()
        with self._conn.cursor() as cur:  # psycopg2 begins the transaction with this statement
            _set_local(cur, self._waits)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> Any:
        result = self._conn.__exit__(exc_type, exc, tb)  # rolls back on an error
        translated = _translate(self._conn, exc, self._waits)
        if translated is not None:
            raise translated from exc
        return result


class _BoundedTransaction:
    """psycopg 3's `conn.transaction()` block, with the timeouts set first."""

    def __init__(self, owner: BoundedPostgres, inner: Any) -> None:
        self._owner, self._inner = owner, inner

    def __enter__(self) -> Any:
        entered = self._inner.__enter__()
        with self._owner._conn.cursor() as cur:
            _set_local(cur, self._owner._waits)
        return entered

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> Any:
        result = self._inner.__exit__(exc_type, exc, tb)
        translated = _translate(self._owner._conn, exc, self._owner._waits)
        if translated is not None:
            raise translated from exc
        return result

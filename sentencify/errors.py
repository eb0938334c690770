"""The project's own errors: one family, so a caller (the CLI, a test, an operator's script) can
catch them as one and knows what each says to the user.

`SentencifyError` is the base; each class below it also keeps the built-in base it had before
(`LeaseLost(RunConflict, RuntimeError)`), so an `except RuntimeError` written earlier still catches
it. The CLI prints one line (sentencify/cli.py `explain`): the message's first line, then `hint`
when the class or the raise gives one; `named` classes are prefixed with their name (errors a user
meets in the consumer's or Airflow's logs rather than from a command).
"""

from __future__ import annotations

from functools import cache


class SentencifyError(Exception):
    """Base of every error this project raises on purpose.

    `hint`: what to do, in words (empty: the message already says it); `named`: the CLI line
    starts with the class name."""

    hint: str = ""
    named: bool = False

    def line(self) -> str:
        """One line for people: the message's first line (else the class name), the hint, the name if `named`."""
        first = (str(self).strip().splitlines() or [""])[0][:300]
        text = f"{type(self).__name__}: {first}" if self.named else first or type(self).__name__
        return f"{text}; {self.hint}" if self.hint and self.hint not in text else text


class ConfigurationError(SentencifyError):
    """A setting, key or connection the code needs is missing or unusable: fix the configuration."""


class ServiceError(SentencifyError):
    """A service or tool (a store, the local stack, Airflow, Superset) failed or refused: look at it."""


class RunConflict(SentencifyError):
    """Another run of the same step holds or took its lease: this run waits, stops or is retried."""


class DataError(SentencifyError):
    """Data the code was given can never be used as it is (a record, an embedding, a template)."""


@cache
def store_errors() -> dict[str, tuple[type[BaseException], ...]]:
    """The base exception classes of each store's client library, by store: `mongo`, `redis`,
    `postgres` (psycopg2, the CLI's driver), `qdrant`; a library not installed has no entry. How the
    CLI recognises a store's error (by class, never by module name)."""
    out: dict[str, tuple[type[BaseException], ...]] = {}
    try:
        from pymongo.errors import PyMongoError

        out["mongo"] = (PyMongoError,)
    except ImportError:
        pass
    try:
        from redis.exceptions import RedisError

        out["redis"] = (RedisError,)
    except ImportError:
        pass
    try:
        import psycopg2

        out["postgres"] = (psycopg2.Error,)
    except ImportError:
        pass
    try:
        from qdrant_client.common.client_exceptions import QdrantException
        from qdrant_client.http.exceptions import ApiException

        out["qdrant"] = (ApiException, QdrantException)
    except ImportError:
        pass
    return out

"""One error family (sentencify/errors.py) and the CLI's one line per error class (cli.explain)."""

from __future__ import annotations

import psycopg2
import pytest
from pymongo.errors import ServerSelectionTimeoutError
from qdrant_client.http.exceptions import ResponseHandlingException
from redis.exceptions import ConnectionError as RedisConnectionError

from consumer.records import BadRecord
from consumer.write import TransientWriteError
from sentencify.airflow_api import AirflowApiError
from sentencify.cli import explain
from sentencify.dashboard.bundle import BundleError
from sentencify.dashboard.deploy import DeployError
from sentencify.dashboard.screenshot import ScreenshotError
from sentencify.erasure.keys import ErasureKeyMissing
from sentencify.errors import ConfigurationError, DataError, RunConflict, SentencifyError, ServiceError
from sentencify.settings import SettingsError
from sentencify.stack.process import StackError
from sentencify.steps.fence import LeaseLost, RedisFull
from sentencify.steps.lease import LeaseTimeout
from sentencify.steps.pg_waits import LockWaitTimeout, StatementTimeout
from sentencify.steps.vectors import NotStorable
from sentencify.stores.versions import UnsupportedServer

# Each project error: its family, and the built-in base that earlier `except` clauses rely on.
FAMILY = [
    (SettingsError, ConfigurationError, ValueError),
    (ErasureKeyMissing, ConfigurationError, ValueError),
    (StackError, ServiceError, RuntimeError),
    (AirflowApiError, ServiceError, RuntimeError),
    (DeployError, ServiceError, RuntimeError),
    (ScreenshotError, ServiceError, RuntimeError),
    (UnsupportedServer, ServiceError, RuntimeError),
    (RedisFull, ServiceError, RuntimeError),
    (LockWaitTimeout, ServiceError, RuntimeError),
    (StatementTimeout, ServiceError, RuntimeError),
    (LeaseLost, RunConflict, RuntimeError),
    (LeaseTimeout, RunConflict, RuntimeError),
    (NotStorable, DataError, ValueError),
    (BundleError, DataError, ValueError),
    (TransientWriteError, ServiceError, Exception),
]


@pytest.mark.parametrize(("cls", "family", "builtin"), FAMILY, ids=lambda c: getattr(c, "__name__", ""))
def test_every_project_error_is_in_the_family_and_keeps_its_base(cls, family, builtin) -> None:
    assert issubclass(cls, family) and issubclass(cls, SentencifyError) and issubclass(cls, builtin)


def test_bad_record_keeps_its_reason() -> None:
    e = BadRecord("not_json", "line 1")
    assert isinstance(e, DataError) and (e.reason, e.detail, str(e)) == ("not_json", "line 1", "not_json: line 1")


def test_explain_a_project_error_says_its_first_line() -> None:
    stack = StackError("redis did not start: see .stack/redis.log\nmore")
    assert explain(stack, None) == "redis did not start: see .stack/redis.log"
    assert explain(LeaseLost(), None) == "LeaseLost"
    assert explain(BadRecord("schema", "no insert_id"), None) == "BadRecord: schema: no insert_id"  # named
    assert explain(TransientWriteError("down"), None) == "TransientWriteError: down"
    assert explain(SettingsError("BAD=1: not a number\nline two"), None) == "BAD=1: not a number\nline two"


def test_a_hint_is_added_once() -> None:
    class Hinted(ServiceError):
        hint = "run `sentencify stack up`"

    assert explain(Hinted("redis is down"), None) == "redis is down; run `sentencify stack up`"
    assert explain(Hinted("redis is down: run `sentencify stack up`"), None) == "redis is down: run `sentencify stack up`"


def test_explain_recognises_each_store_by_its_drivers_class() -> None:
    mongo = ServerSelectionTimeoutError("localhost:1: refused, Timeout: 5s, Topology: ...")
    assert explain(mongo, None) == (
        "MongoDB (MONGO_URI): ServerSelectionTimeoutError: localhost:1: refused; is it up (`sentencify stack status`)?"
    )
    assert explain(RedisConnectionError("Error 111 connecting"), None) == (
        "Redis (REDIS_URL): Error 111 connecting; is it up (`sentencify stack status`)?"
    )
    assert explain(psycopg2.OperationalError("connection refused\nIs the server running?"), None) == (
        "PostgreSQL (ANALYTICS_DB_URI): connection refused"
    )
    assert explain(ResponseHandlingException(OSError("timed out")), None) == "timed out"


def test_anything_else_is_named() -> None:
    assert explain(KeyError("k"), None) == "KeyError: 'k'"
    assert explain(ValueError("bad value"), None) == "bad value"

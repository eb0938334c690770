"""Real services for the tests: one private stack per test session (free ports, temp dir), isolated per test.

Each test gets its own topic prefix, MongoDB database and consumer group, so tests never see
each other's data and the quirks of a shared consumer group (tansu) do not leak between them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import redis as redis_lib
from hypothesis import settings as hypothesis_settings
from pymongo import MongoClient

from sentencify import stack
from sentencify.settings import Settings
from sentencify.stack.topics import create_topics
from tests.helpers import ConsumerThread  # noqa: F401  (re-exported for tests)

# No per-example deadline: on a busy machine (CI shares its cores) a slow example is not a failure;
# properties are about results, and performance is measured in bench/.
hypothesis_settings.register_profile("sentencify", deadline=None)
hypothesis_settings.load_profile("sentencify")


@pytest.fixture(scope="session")
def stack_settings(request) -> Settings:
    """Kafka, MongoDB, Redis and PostgreSQL started for this test session, stopped at its end.

    Their directory is removed when every test passed; after a failure it stays, with the services' logs."""
    root = Path(os.environ.get("TEST_STACK_ROOT", tempfile.gettempdir()))
    stack_dir = Path(tempfile.mkdtemp(prefix="sentencify-test-stack-", dir=root))
    stack_dir.chmod(0o755)
    settings = stack.private_settings(stack_dir)
    try:
        stack.up(settings, only=stack.CORE_SERVICES, echo=lambda line: print(line))
        yield settings
    finally:  # also when `up` failed half-way: stop what did start
        stack.down(settings, echo=lambda line: print(line))
        if request.session.testsfailed:
            print(f"the test stack's logs are kept in {stack_dir}")
        else:
            shutil.rmtree(stack_dir, ignore_errors=True)


@pytest.fixture
def settings(stack_settings: Settings, request) -> Settings:
    """Fresh names for this test: topic prefix, database, consumer group."""
    tag = uuid.uuid4().hex[:8]
    s = dataclasses.replace(
        stack_settings,
        topic_prefix=f"t{tag}.",
        mongo_db=f"test_{tag}",
        consumer_group=f"group-{tag}",
        flush_interval_ms=300,
    )
    create_topics(s)
    return s


@pytest.fixture
def mongo(settings: Settings):
    client = MongoClient(settings.mongo_uri, tz_aware=True)
    yield client[settings.mongo_db]
    client.drop_database(settings.mongo_db)
    client.close()


@pytest.fixture
def analytics_uri(stack_settings: Settings):
    """An analytics database of this test's own (the views count, and tests search, everything in it)."""
    from sentencify.stack.services import postgres_service

    pg = postgres_service(stack_settings)
    pg.provision()
    name = f"analytics_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    yield f"postgresql://sentencify@127.0.0.1:{stack_settings.postgres_port}/{name}"
    pg.psql(f"drop database {name} with (force)")


@pytest.fixture
def redis(settings):
    """The stack's Redis, emptied after the test."""
    r = redis_lib.Redis.from_url(settings.redis_url)
    yield r
    r.flushdb()
    r.close()


# Files tests keep for people to look at (screenshots): listed at the end of the run, for CI to collect.
ARTIFACTS_WRITTEN: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if ARTIFACTS_WRITTEN:
        terminalreporter.section("artifacts")
        for path in ARTIFACTS_WRITTEN:
            terminalreporter.write_line(path)

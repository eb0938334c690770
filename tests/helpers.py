"""Helpers the integration tests share: run the consumer (thread or process), produce, compare ids."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from consumer.service import IngestService
from sentencify.produce import producer
from sentencify.settings import Settings
from sentencify.simulate import Manifest, Record

ROOT = Path(__file__).resolve().parent.parent


class ConsumerThread:
    """The real ingestion service in a thread of the test process (no signals)."""

    def __init__(self, settings: Settings, *, until_idle_s: float | None = None, **kwargs) -> None:
        self.service = IngestService(settings, until_idle_s=until_idle_s, install_signal_handlers=False, **kwargs)
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.exit_code = self.service.run()
        except BaseException as exc:  # noqa: BLE001 (surfaced by join())
            self.error = exc

    def start(self) -> ConsumerThread:
        self.thread.start()
        return self

    def join(self, timeout: float = 120) -> int:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.service.stop()
            self.thread.join(30)
            raise AssertionError(f"consumer did not finish within {timeout}s")
        if self.error:
            raise self.error
        return self.exit_code

    def stop(self) -> int:
        self.service.stop()
        return self.join(60)


def consume_until_idle(settings: Settings, idle_s: float = 2.0, timeout: float = 180, **kwargs) -> IngestService:
    runner = ConsumerThread(settings, until_idle_s=idle_s, **kwargs).start()
    assert runner.join(timeout) == 0
    return runner.service


def send(settings: Settings, records: Iterable[Record]) -> Manifest:
    from sentencify.produce import produce

    return produce(settings, records, progress=False)


def send_raw(settings: Settings, topic_suffix: str, values: list[bytes], key: bytes | None = None) -> None:
    kafka = producer(settings)
    try:
        for value in values:
            kafka.send(settings.topic_prefix + topic_suffix, key=key, value=value).get(timeout=30)
    finally:
        kafka.close()


def stored_ids(db, collection: str) -> set[str]:
    return {d["_id"] for d in db[collection].find({}, {"_id": 1})}


def assert_manifest_stored(db, manifest: Manifest) -> None:
    for collection, expected in manifest.expected_ids.items():
        got = stored_ids(db, collection)
        missing, extra = expected - got, got - expected
        assert not missing and not extra, f"{collection}: {len(missing)} missing, {len(extra)} unexpected"


def committed_offsets(settings: Settings, group: str | None = None, extra: Iterable[str] = ()) -> dict[tuple[str, int], int]:
    """The group's committed offsets for every partition of the seven topics (and of `extra` suffixes)."""
    from sentencify.schemas import topics

    names = list(topics(settings.topic_prefix)) + [settings.topic_prefix + e for e in extra]
    probe = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group or settings.consumer_group, enable_auto_commit=False
    )
    try:
        out = {}
        for topic in names:
            for partition in range(settings.topic_partitions):
                out[(topic, partition)] = probe.committed(TopicPartition(topic, partition)) or 0
        return out
    finally:
        probe.close()


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """`sentencify ARGS` in its own process (`python -m sentencify.cli`) with exactly `env`; not checked."""
    return subprocess.run(
        [sys.executable, "-m", "sentencify.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def consumer_process(settings: Settings, *args: str, log_path: Path) -> subprocess.Popen:
    """`python -m consumer` as a child process, logging JSON lines to `log_path`."""
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    log = open(log_path, "ab")  # noqa: SIM115 (the child writes to it after this returns)
    return subprocess.Popen([sys.executable, "-m", "consumer", *args], cwd=ROOT, env=env, stdout=log, stderr=log)


def log_events(log_path: Path, msg: str) -> list[dict]:
    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("msg") == msg:
                events.append(event)
    return events


@contextlib.contextmanager
def services_started(settings: Settings, names: list[str]):
    """These stack services for the block, stopped after it (also when starting failed half-way)."""
    from sentencify import stack

    try:
        stack.up(settings, only=names, echo=print)
        yield settings
    finally:
        stack.down(settings, only=names, echo=print)


def wait_for(check, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

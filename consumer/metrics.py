"""Observability: Prometheus metrics (prometheus_client) on `/metrics`, liveness and degradation on `/healthz`.

Every metric is declared once in SPECS, with its type, help text and labels; the service names
them by string (`metrics.inc("sentencify_consumer_commits_total")`). Names follow Prometheus'
conventions: `_total` for counters, units as suffixes (`_seconds`, `_bytes`, `_records`,
`_timestamp_seconds`). Process metrics (CPU, memory, file descriptors) and Python's GC come from
the client's standard collectors.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector


@dataclass(frozen=True)
class Spec:
    kind: type
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None


_WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_AGE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)

SPECS: dict[str, Spec] = {
    "sentencify_consumer_records_total": Spec(
        Counter, "Records handled, by topic and outcome (stored, duplicate, suppressed: an erased user's).", ("topic", "outcome")
    ),
    "sentencify_consumer_dead_letters_total": Spec(
        Counter, "Records sent to dead_letters, by topic and reason.", ("topic", "reason")
    ),
    "sentencify_consumer_batches_total": Spec(Counter, "insert_many calls that succeeded, by collection.", ("collection",)),
    "sentencify_consumer_batch_records_total": Spec(
        Counter, "Records in those batches, by collection (sum of batch sizes).", ("collection",)
    ),
    "sentencify_consumer_write_errors_total": Spec(Counter, "Failed insert_many attempts (each retried)."),
    "sentencify_consumer_commits_total": Spec(Counter, "Offset commits."),
    "sentencify_consumer_write_duration_seconds": Spec(
        Histogram, "Time of one successful insert_many, by collection.", ("collection",), _WRITE_BUCKETS
    ),
    "sentencify_consumer_record_age_seconds": Spec(
        Histogram,
        "Event time (created_at, or F's last_updated) to stored, per stored record, by topic.",
        ("topic",),
        _AGE_BUCKETS,
    ),
    "sentencify_consumer_lag_records": Spec(
        Gauge,
        "Records not yet stored, by topic and partition: the log end offset (asked of the broker, also while "
        "fetching is paused) minus the offset below which every record is stored.",
        ("topic", "partition"),
    ),
    "sentencify_consumer_buffered_records": Spec(Gauge, "Records buffered and not yet written."),
    "sentencify_consumer_buffered_bytes": Spec(Gauge, "Bytes (record values as received) buffered and not yet written."),
    "sentencify_consumer_bad_ratio": Spec(
        Gauge, "Share of bad records among a partition's last DLQ_WINDOW records.", ("topic", "partition")
    ),
    "sentencify_consumer_producer_alarm": Spec(
        Gauge, "1 while a partition's share of bad records is over DLQ_MAX_BAD_RATIO.", ("topic", "partition")
    ),
    "sentencify_consumer_paused": Spec(Gauge, "1 while fetching is paused (MongoDB not taking writes, or the buffer full)."),
    "sentencify_consumer_assigned_partitions": Spec(Gauge, "Partitions assigned to this consumer."),
    "sentencify_consumer_last_poll_timestamp_seconds": Spec(Gauge, "Unix time of the last poll."),
    "sentencify_ingestion_gap_records_total": Spec(
        Counter,
        "Records that left Kafka before the consumer read them (retention, DeleteRecords, a re-created topic), by "
        "topic, counted when their gap is first recorded in ingestion_gaps (a re-created topic: the records known lost).",
        ("topic",),
    ),
}


class Metrics:
    """Thread-safe (prometheus_client's metrics are); the consumer loop and writers write, the HTTP thread reads."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._metrics = {}
        for name, spec in SPECS.items():
            base = name[: -len("_total")] if spec.kind is Counter else name
            kwargs = {"buckets": spec.buckets} if spec.buckets else {}
            self._metrics[name] = spec.kind(base, spec.help, spec.labels, registry=self.registry, **kwargs)
        self.degraded: dict[str, str] = {}  # what is wrong but not stopping the loop, by source
        self.stall_after_s = 60.0
        self._beat: float | None = None  # monotonic time the loop last went round

    def beat(self) -> None:
        """The loop went round once (called at the top of every iteration, whatever it then waits for)."""
        self._beat = time.monotonic()

    def _child(self, name: str, labels: dict) -> Any:
        metric = self._metrics[name]
        return metric.labels(**{k: str(v) for k, v in labels.items()}) if labels else metric

    def inc(self, name: str, amount: float = 1, **labels: object) -> None:
        if amount:
            self._child(name, labels).inc(amount)

    def set(self, name: str, value: float, **labels: object) -> None:
        self._child(name, labels).set(value)

    def observe(self, name: str, value: float, **labels: object) -> None:
        self._child(name, labels).observe(value)

    def clear(self, name: str) -> None:
        self._metrics[name].clear()

    def remove(self, name: str, **labels: object) -> None:
        """Drop one labelled series (a partition no longer assigned); no error if it is not there."""
        with contextlib.suppress(KeyError):
            self._metrics[name].remove(*(str(labels[k]) for k in SPECS[name].labels))

    def _samples(self, name: str) -> Iterator[Any]:
        for family in self._metrics[name].collect():
            for sample in family.samples:
                if sample.name == name:
                    yield sample

    def get(self, name: str, **labels: object) -> float:
        wanted = {k: str(v) for k, v in labels.items()}
        return sum(s.value for s in self._samples(name) if s.labels == wanted)

    def total(self, name: str) -> float:
        return sum(s.value for s in self._samples(name))

    def sum_where(self, name: str, **labels: object) -> float:
        """Sum of a metric's series that carry all the given labels."""
        wanted = {k: str(v) for k, v in labels.items()}.items()
        return sum(s.value for s in self._samples(name) if wanted <= s.labels.items())

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def health(self) -> tuple[bool, str]:
        """(alive, text) for `/healthz`.

        Not alive (`stalled: ...`, HTTP 503) only when the loop has not gone round for `stall_after_s`
        (60 s): a restart may help. Everything a restart would not fix is `degraded: ...` and alive
        (HTTP 200): waiting for MongoDB at start, MongoDB not taking writes (until a write succeeds
        again, retry probes included), the broker not answering or refusing our login or TLS, a
        producer in alarm, an ingestion gap not yet acknowledged.
        Otherwise `ok`. Restarting for those would only rebalance the group."""
        if self._beat is not None and time.monotonic() - self._beat > self.stall_after_s:
            return False, f"stalled: the consumer loop has not run for {time.monotonic() - self._beat:.0f}s"
        degraded = sorted(dict(self.degraded).values())
        if degraded:
            return True, "degraded: " + "; ".join(degraded)
        return True, "ok"


class MetricsServer:
    """`/metrics` and `/healthz` on 127.0.0.1 (or the given host) in a daemon thread.

    Hand-written over http.server rather than prometheus_client's `start_http_server`: that one
    serves only `/metrics`, and the health endpoint must live on the same port."""

    def __init__(self, metrics: Metrics, port: int, host: str = "127.0.0.1") -> None:
        registry = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    code, data, ctype = 200, registry.render(), CONTENT_TYPE_LATEST
                elif self.path == "/healthz":
                    ok, why = registry.health()
                    code, data, ctype = (200 if ok else 503), (why + "\n").encode(), "text/plain"
                else:
                    code, data, ctype = 404, b"try /metrics or /healthz\n", "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # scrapes are not news
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""Observability: counters and gauges in Prometheus text on `/metrics`, liveness on `/healthz`."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Labels = tuple[tuple[str, str], ...]

_HELP = {
    "sentencify_consumer_records_total": ("counter", "Records handled, by topic and outcome (stored, duplicate, dead_letter)."),
    "sentencify_consumer_dead_letters_total": ("counter", "Records sent to dead_letters, by topic and reason."),
    "sentencify_consumer_batches_total": ("counter", "insert_many calls that succeeded, by collection."),
    "sentencify_consumer_batch_records_total": ("counter", "Records in those batches, by collection (sum of batch sizes)."),
    "sentencify_consumer_write_errors_total": ("counter", "Failed insert_many attempts (each retried)."),
    "sentencify_consumer_commits_total": ("counter", "Offset commits."),
    "sentencify_consumer_lag": ("gauge", "Highwater minus committed offset, by topic and partition."),
    "sentencify_consumer_buffered_records": ("gauge", "Records buffered and not yet written."),
    "sentencify_consumer_buffered_bytes": ("gauge", "Bytes (record values as received) buffered and not yet written."),
    "sentencify_consumer_bad_ratio": ("gauge", "Share of bad records among a partition's last DLQ_WINDOW records."),
    "sentencify_consumer_producer_alarm": ("gauge", "1 while a partition's share of bad records is over DLQ_MAX_BAD_RATIO."),
    "sentencify_consumer_paused": ("gauge", "1 while fetching is paused (MongoDB not taking writes, or the buffer full)."),
    "sentencify_consumer_assigned_partitions": ("gauge", "Partitions assigned to this consumer."),
    "sentencify_consumer_last_poll_seconds": ("gauge", "Unix time of the last poll."),
}


def _labels(**labels: object) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


class Metrics:
    """Thread-safe registry; the consumer loop writes, the HTTP thread reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.degraded: dict[str, str] = {}  # what is wrong but not stopping ingestion, by source
        self.stall_after_s = 60.0

    def inc(self, name: str, amount: float = 1, **labels: object) -> None:
        key = _labels(**labels)
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: object) -> None:
        with self._lock:
            self._values[name][_labels(**labels)] = value

    def clear(self, name: str) -> None:
        with self._lock:
            self._values.pop(name, None)

    def get(self, name: str, **labels: object) -> float:
        with self._lock:
            return self._values.get(name, {}).get(_labels(**labels), 0)

    def total(self, name: str) -> float:
        with self._lock:
            return sum(self._values.get(name, {}).values())

    def sum_where(self, name: str, **labels: object) -> float:
        """Sum of a metric's series that carry all the given labels."""
        wanted = set(_labels(**labels))
        with self._lock:
            return sum(v for key, v in self._values.get(name, {}).items() if wanted <= set(key))

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._values):
                kind, text = _HELP.get(name, ("untyped", name))
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for labels, value in sorted(self._values[name].items()):
                    inner = ",".join(f'{k}="{v}"' for k, v in labels)
                    lines.append(f"{name}{{{inner}}} {value:g}" if inner else f"{name} {value:g}")
        return "\n".join(lines) + "\n"

    def health(self) -> tuple[bool, str]:
        """(alive, text): not alive only when the loop has stalled (a restart may help); degraded
        states (a broken producer, MongoDB refusing writes) stay alive: restarting would not fix
        them, and every restart rebalances the group."""
        last = self.get("sentencify_consumer_last_poll_seconds")
        if last and time.time() - last > self.stall_after_s:
            return False, f"stalled: no poll for {time.time() - last:.0f}s"
        with self._lock:
            degraded = sorted(self.degraded.values())
        if degraded:
            return True, "degraded: " + "; ".join(degraded)
        return True, "ok"


class MetricsServer:
    """`/metrics` and `/healthz` on 127.0.0.1 (or the given host) in a daemon thread."""

    def __init__(self, metrics: Metrics, port: int, host: str = "127.0.0.1") -> None:
        registry = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path == "/metrics":
                    code, body, ctype = 200, registry.render(), "text/plain; version=0.0.4"
                elif self.path == "/healthz":
                    ok, why = registry.health()
                    code, body, ctype = (200 if ok else 503), why + "\n", "text/plain"
                else:
                    code, body, ctype = 404, "try /metrics or /healthz\n", "text/plain"
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # scrapes are not news
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

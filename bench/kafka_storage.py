"""What the local durable Kafka costs: tansu over `sentencify.stack.kafka_storage` vs tansu in memory.

Three brokers, measured in the same run on the same data (issue 30, item 4):
- memory: tansu with `memory://` storage (no durability): the baseline;
- durable: tansu over this project's object store (the stack's Kafka);
- durable-stock-listing: the same store with localbucket's own listing (every list walks and
  sorts the whole bucket), i.e. the store before this change.
Each gets `--history` records in other topics first (the data of earlier tests: objects the
store holds), then the measured topics get `--records`. Measured from /proc/<pid>/stat (user +
system CPU of the broker and of its store): a drain (a new consumer group reads every record)
per record, then one idle consumer polling for `--idle-s` seconds, per second and per poll.

Run: `python -m bench.kafka_storage [--records N] [--history N] [--idle-s S]`; the figures go to
docs/benchmarks/kafka-storage.md (bench/report.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

from bench.report import write_figures
from sentencify.stack import kafka_storage
from sentencify.stack.service import tansu_binary

TICK = os.sysconf("SC_CLK_TCK")
TOPICS, PARTITIONS = 7, 4
DRAIN_LIMIT_S = 120  # a broker that cannot drain in this long is reported with what it drained
VALUE = b'{"recommend_session_id":"s","user_id":"u","created_at":"2026-01-01T00:00:00Z","pad":"' + b"x" * 300 + b'"}'


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def serve_stock(root: Path, port: int) -> None:
    """The store with localbucket's own listing (the whole bucket per list): the 'before'."""
    import localbucket

    handler = kafka_storage.handler_class()
    stock = type("StockListing", (handler,), {"_list_entries": localbucket.S3Handler._list_entries})
    (root / kafka_storage.BUCKET).mkdir(parents=True, exist_ok=True)
    stock.data_root = root.resolve()
    ThreadingHTTPServer(("127.0.0.1", port), stock).serve_forever()


@dataclass
class Broker:
    name: str
    procs: list[subprocess.Popen]
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return sum(cpu_s(p.pid) for p in self.procs)

    def store_cpu(self) -> float:
        """The object store's share (0 for the memory broker): every process but the broker."""
        return sum(cpu_s(p.pid) for p in self.procs[:-1])

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def start(name: str, work: Path) -> Broker:
    port = free_port()
    tansu = [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}", "--advertised-listener-url"]
    tansu.append(f"tcp://127.0.0.1:{port}")
    log = open(work / f"{name}.log", "ab")  # noqa: SIM115 (the children write to it)
    procs = []
    env = {"PATH": "/usr/bin:/bin"}
    if name == "memory":
        tansu += ["--storage-engine", "memory://tansu/"]
    else:
        store_port = free_port()
        data = work / name
        data.mkdir()
        mode = ["-m", "sentencify.stack.kafka_storage"] if name == "durable" else ["-m", "bench.kafka_storage", "--serve-stock"]
        procs.append(subprocess.Popen([sys.executable, *mode, str(data), str(store_port)], stdout=log, stderr=log))
        wait_port(store_port)
        urllib.request.urlopen(f"http://127.0.0.1:{store_port}/", timeout=5).close()
        tansu += ["--storage-engine", f"s3://{kafka_storage.BUCKET}/"]
        env.update(kafka_storage.broker_env(store_port))
    procs.append(subprocess.Popen(tansu, stdout=log, stderr=log, env=env))
    wait_port(port)
    return Broker(name, procs, port)


def produce(bootstrap: str, prefix: str, records: int, batch: int) -> None:
    """`records` records over TOPICS x PARTITIONS, flushed every `batch` sends: small batches, one
    object each, as the tests' producers make them."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(f"{prefix}{t}", PARTITIONS, 1) for t in range(TOPICS)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    for i in range(records):
        producer.send(f"{prefix}{i % TOPICS}", VALUE, partition=(i // TOPICS) % PARTITIONS)
        if i % batch == batch - 1:
            producer.flush()
    producer.flush()
    producer.close()


def drain_and_idle(broker: Broker, prefix: str, records: int, idle_s: float) -> dict[str, float]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        *(f"{prefix}{t}" for t in range(TOPICS)),
        bootstrap_servers=broker.bootstrap,
        group_id=f"bench-{prefix}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    got, began, cpu0, store0 = 0, time.monotonic(), broker.cpu(), broker.store_cpu()
    while got < records and time.monotonic() - began < DRAIN_LIMIT_S:
        for batch in consumer.poll(500).values():
            got += len(batch)
        consumer.commit()
    drain_cpu, drain_s, drain_store = broker.cpu() - cpu0, time.monotonic() - began, broker.store_cpu() - store0
    polls, began, cpu0 = 0, time.monotonic(), broker.cpu()
    while time.monotonic() - began < idle_s:
        consumer.poll(500)
        polls += 1
    idle_cpu, idle_wall = broker.cpu() - cpu0, time.monotonic() - began
    consumer.close()
    return {
        "drain_ms_per_1k": drain_cpu / got * 1e6,
        "drain_s": drain_s,
        "idle_core": idle_cpu / idle_wall,
        "idle_ms_per_poll": idle_cpu / polls * 1000,
        "polls": polls,
        "drained": got,
        "drain_store_share": drain_store / drain_cpu if drain_cpu else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--serve-stock"]:
        serve_stock(Path(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_storage", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000, help="records the consumer drains")
    parser.add_argument("--history", type=int, default=20000, help="records in other topics first (earlier tests' data)")
    parser.add_argument("--idle-s", type=float, default=20.0, help="seconds of idle polling measured")
    parser.add_argument("--brokers", default="memory,durable,durable-stock-listing", help="which to measure (memory first)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write docs/benchmarks/kafka-storage.md")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-kafka-storage-"))
    results: dict[str, dict[str, float]] = {}
    try:
        for name in args.brokers.split(","):
            broker = start(name, work)
            try:
                produce(broker.bootstrap, "history.", args.history, batch=20)
                produce(broker.bootstrap, "measured.", args.records, batch=20)
                results[name] = drain_and_idle(broker, "measured.", args.records, args.idle_s)
            finally:
                broker.stop()
            r = results[name]
            print(
                f"{name:22} drain {r['drain_ms_per_1k']:7.1f} ms CPU/1k records ({r['drained']:.0f} in {r['drain_s']:.1f} s)   "
                f"idle {r['idle_core'] * 100:6.2f}% of a core, {r['idle_ms_per_poll']:6.2f} ms CPU/poll ({r['polls']:.0f} polls)",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results["memory"]
    lines = [
        f"records {args.records} (history {args.history}, {TOPICS} topics x {PARTITIONS} partitions), idle {args.idle_s:g} s"
    ]
    for name, r in results.items():
        drain_x, idle_x = r["drain_ms_per_1k"] / base["drain_ms_per_1k"], r["idle_core"] / base["idle_core"]
        lines.append(
            f"{name}: drain {r['drain_ms_per_1k']:.1f} ms CPU per 1k records (x{drain_x:.2f} memory; "
            f"{r['drained']:.0f} records in {r['drain_s']:.1f} s, {r['drain_store_share'] * 100:.0f}% of it the store); "
            f"idle {r['idle_core'] * 100:.2f}% of a core, {r['idle_ms_per_poll']:.2f} ms CPU per poll (x{idle_x:.2f} memory)"
        )
    lines.append("CPU: broker + its store, user + system, from /proc/<pid>/stat; x = ratio to the memory broker in the same run")
    for line in lines:
        print(line)
    if not args.no_write:
        print(f"figures written to {write_figures('kafka-storage', lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench-ingest`: the consumer against a raw and a naive baseline, on one 100k-record topic set.

(a) this consumer (validation, routing, dead letters, offset tracking, metrics);
(b) a minimal baseline: poll -> json.loads -> insert_many(100) per topic -> commit, no validation;
(c) a naive baseline: json.loads -> insert_one -> commit, per record.

Each variant runs in its own process with a fresh consumer group and a fresh database holding
the same indexes (the ones the pipeline joins on), so the targets are equal and peak RSS is its
own. Throughput counts from the first record received to the last record written and
committed (the group join is not counted). The naive baseline is slow, so it runs until it has
handled --naive-limit records and its rate is taken over those. (d) is a reference: the same
documents inserted from memory, sequentially, no Kafka. Then the consumer alone drains
--large records of about 500 KB each (a big extra field, or an embedding of another version as
a long list of floats) and prints `large records: N events/s peak_rss_mb=X` (target: <= 300 MB,
which MAX_BUFFERED_BYTES bounds). Last line: `ratios a/b=X a/c=Y` (targets: a/b >= 0.8, a/c >= 10).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

from bench import cost
from bench.report import write_figures
from sentencify import stack
from sentencify.settings import Settings


def _kafka_consumer(settings: Settings, group: str):
    from kafka import KafkaConsumer

    from sentencify.schemas import topics

    consumer = KafkaConsumer(
        *topics(settings.topic_prefix),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
        fetch_max_bytes=32 * 1024 * 1024,
        receive_message_max_bytes=64 * 1024 * 1024,
    )
    return consumer


def run_consumer(settings: Settings, total: int, group: str, limit: int, meter: cost.Meter | None = None) -> dict:
    """(a): the real IngestService, watched from outside for its first record and its last commit.

    Also `cost`: what it used between the two (bench.cost: this process's CPU, its MongoDB round
    trips when bench.cost.install() ran before, the servers' CPU when `meter` knows their PIDs)."""
    from consumer.service import IngestService

    meter = meter or cost.Meter()
    service = IngestService(settings, group_id=group, install_signal_handlers=False, metrics_port=-1)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    first = last = None
    while True:
        handled = service.metrics.total("sentencify_consumer_records_total") + service.metrics.total(
            "sentencify_consumer_dead_letters_total"
        )
        if first is None and ((service.path and service.path.batcher.total) or handled):
            first, start = time.perf_counter(), meter.read()
        committed_all = handled >= total and not service.path.tracker.committable(service._assigned)
        if committed_all:
            last, end = time.perf_counter(), meter.read()
            break
        time.sleep(0.005)
    service.stop()
    thread.join(60)
    return {"records": int(handled), "seconds": last - first, "cost": dataclasses.asdict(cost.spent(start, end))}


def run_raw(settings: Settings, total: int, group: str, limit: int) -> dict:
    """(b): poll -> json -> insert_many(100) per topic -> commit. No validation, no dead letters."""
    from pymongo import MongoClient
    from pymongo.errors import BulkWriteError

    db = MongoClient(settings.mongo_uri)[settings.mongo_db]
    consumer = _kafka_consumer(settings, group)
    prefix_len = len(settings.topic_prefix)
    done = 0
    first = None
    while done < total:
        polled = consumer.poll(timeout_ms=500)
        if not polled:
            continue
        first = first or time.perf_counter()
        for tp, messages in polled.items():
            docs = [orjson.loads(m.value) for m in messages]  # the consumer's parser: compare the rest
            for i in range(0, len(docs), 100):
                with contextlib.suppress(BulkWriteError):  # duplicate keys of redelivered records: the consumer's no-op
                    db[tp.topic[prefix_len:]].insert_many(docs[i : i + 100], ordered=False)
            done += len(docs)
        consumer.commit()
    last = time.perf_counter()
    consumer.close()
    return {"records": done, "seconds": last - first}


def run_naive(settings: Settings, total: int, group: str, limit: int) -> dict:
    """(c): one insert_one and one commit per record."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata
    from pymongo import MongoClient
    from pymongo.errors import DuplicateKeyError

    db = MongoClient(settings.mongo_uri)[settings.mongo_db]
    consumer = _kafka_consumer(settings, group)
    prefix_len = len(settings.topic_prefix)
    done = 0
    first = None
    while done < min(total, limit):
        polled = consumer.poll(timeout_ms=500, max_records=50)
        if not polled:
            continue
        first = first or time.perf_counter()
        for tp, messages in polled.items():
            for m in messages:
                with contextlib.suppress(DuplicateKeyError):
                    db[tp.topic[prefix_len:]].insert_one(orjson.loads(m.value))
                consumer.commit({TopicPartition(m.topic, m.partition): OffsetAndMetadata(m.offset + 1, "", -1)})
                done += 1
    last = time.perf_counter()
    consumer.close()
    return {"records": done, "seconds": last - first}


def run_reference(settings: Settings, total: int, group: str, limit: int) -> dict:
    """(d): no Kafka at all: the same documents inserted from memory, one insert_many(BATCH_SIZE) at a time.

    What batching alone gets on this server; the consumer overlaps writes, so it can pass it.
    """
    from pymongo import MongoClient

    from sentencify.simulate import generate

    db = MongoClient(settings.mongo_uri)[settings.mongo_db]
    by_collection: dict[str, list[dict]] = {}
    for n, rec in enumerate(generate(int(total / 4.85) + 1, seed=1, anomalies=0.0, embedding_dim=settings.embedding_dim)):
        if n == total:
            break
        by_collection.setdefault(rec.topic_suffix, []).append(orjson.loads(rec.value))
    first = time.perf_counter()
    done = 0
    for collection, docs in by_collection.items():
        for i in range(0, len(docs), settings.batch_size):
            db[collection].insert_many(docs[i : i + settings.batch_size], ordered=False)
            done += len(docs[i : i + settings.batch_size])
    return {"records": done, "seconds": time.perf_counter() - first}


def large_records(count: int) -> list[tuple[str, bytes]]:
    """(collection, value) of about 500 KB each: half a big extra text field, half 25,000 floats."""
    from tests.factories import record

    out = []
    for i in range(count):
        if i % 2:
            out.append(("recommend_log", orjson.dumps({**record("I"), "debug_dump": "x" * 500_000})))
        else:
            floats = [((i * 7919 + k) % 1000) / 997.0 for k in range(25_000)]
            out.append(("context_block", orjson.dumps({**record("E"), "embedding_v2": floats, "embedding_version": "v2"})))
    return out


def _produce_large(settings: Settings, count: int) -> tuple[Settings, float]:
    """The large records under their own prefix; returns those settings and the megabytes sent."""
    from sentencify.produce import producer
    from sentencify.stack.topics import create_topics

    s = dataclasses.replace(settings, topic_prefix="large.")
    create_topics(s)
    values = large_records(count)
    kafka = producer(s)
    try:
        for collection, value in values:
            kafka.send(s.topic_prefix + collection, value=value)
        kafka.flush(300)
    finally:
        kafka.close()
    return s, sum(len(v) for _, v in values) / 1e6


def _large_records_run(large: Settings, count: int, mb: float) -> dict:
    print(f"running consumer on {count} large records ({mb:.0f} MB) ...", flush=True)
    result = _run_variant(large, "consumer", count, 0)
    result["mb"] = mb
    return result


def memory_runs(settings: Settings, large: Settings | None, total: int, large_count: int, sizes_mib: list[int]) -> list[str]:
    """Peak RSS of the consumer (a) at each MAX_BUFFERED_BYTES, on the ordinary and the large records."""
    lines = []
    for mib in sizes_mib:
        cut = dataclasses.replace(settings, max_buffered_bytes=mib * 1024 * 1024)
        ordinary = _run_variant(cut, "consumer", total, 0)
        line = f"memory: MAX_BUFFERED_BYTES={mib} MiB  ordinary peak_rss_mb={ordinary['peak_rss_mb']:.0f}"
        if large is not None:
            big = _run_variant(dataclasses.replace(large, max_buffered_bytes=mib * 1024 * 1024), "consumer", large_count, 0)
            line += f"  large peak_rss_mb={big['peak_rss_mb']:.0f}"
        print(line, flush=True)
        lines.append(line)
    return lines


VARIANTS = {"consumer": run_consumer, "raw": run_raw, "naive": run_naive, "reference": run_reference}


def _child(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    result = VARIANTS[args.variant](settings, args.total, args.group, args.naive_limit)
    result["peak_rss_mb"] = cost.peak_rss_mb()
    print(json.dumps(result))
    return 0


def _run_variant(settings: Settings, variant: str, total: int, naive_limit: int) -> dict:
    tag = f"{variant}-{int(time.time() * 1000)}"
    child = dataclasses.replace(settings, mongo_db=f"bench_{variant}", consumer_group=f"bench-{tag}")
    from pymongo import MongoClient

    client = MongoClient(settings.mongo_uri)
    client.drop_database(child.mongo_db)
    # Same target for every variant: the collections with the indexes the pipeline needs.
    from sentencify.mongo import ensure_indexes

    ensure_indexes(client[child.mongo_db])
    client.close()
    env = {**child.to_env(), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.ingest",
            "--child",
            variant,
            "--total",
            str(total),
            "--group",
            child.consumer_group,
            "--naive-limit",
            str(naive_limit),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"variant {variant} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["rate"] = result["records"] / result["seconds"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="size of the topic set (default 100k)")
    parser.add_argument("--naive-limit", type=int, default=15_000, help="records the naive baseline handles")
    parser.add_argument("--write-concurrency", type=int, default=None, help="WRITE_CONCURRENCY of the consumer")
    parser.add_argument("--large", type=int, default=2000, help="records of ~500 KB for the memory run (0: skip)")
    parser.add_argument(
        "--buffer-mib",
        default="16,64,256",
        help="MAX_BUFFERED_BYTES values (MiB, comma-separated) the consumer's peak RSS is measured at ('': skip)",
    )
    parser.add_argument("--memory-only", action="store_true", help="only the peak-RSS runs (no baselines)")
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.variant = args.child
        return _child(args)

    from sentencify.produce import produce
    from sentencify.simulate import generate

    stack_dir = Path(tempfile.mkdtemp(prefix="sentencify-bench-"))
    stack_dir.chmod(0o755)
    settings = stack.private_settings(stack_dir)
    if args.write_concurrency:
        settings = dataclasses.replace(settings, write_concurrency=args.write_concurrency)
    print(f"bench-ingest: private stack in {stack_dir}", flush=True)
    try:
        stack.up(settings, only=["kafka", "mongodb"])
        sessions = int(args.records / 4.85) + 1
        records = []
        for rec in generate(sessions, seed=1, anomalies=0.0, embedding_dim=settings.embedding_dim):
            records.append(rec)
            if len(records) == args.records:
                break
        size_mb = sum(len(r.value) for r in records) / 1e6
        produce(settings, records, total=len(records))
        print(f"topic set: {len(records)} records, {size_mb:.0f} MB, 7 topics x {settings.topic_partitions} partitions")
        results = {}
        for variant in () if args.memory_only else ("consumer", "raw", "naive", "reference"):
            print(f"running {variant} ...", flush=True)
            results[variant] = r = _run_variant(settings, variant, len(records), args.naive_limit)
            print(
                f"  {variant:<9} {r['records']:>7} records in {r['seconds']:6.1f}s = {r['rate']:8.0f} events/s   "
                f"peak RSS {r['peak_rss_mb']:.0f} MB",
                flush=True,
            )
        large_settings, large_mb = _produce_large(settings, args.large) if args.large else (None, 0.0)
        large = None
        if large_settings is not None and not args.memory_only:
            large = _large_records_run(large_settings, args.large, large_mb)
        sizes = [int(x) for x in args.buffer_mib.split(",") if x.strip()]
        memory = memory_runs(settings, large_settings, len(records), args.large, sizes) if sizes else []
    finally:
        stack.down(settings, only=["kafka", "mongodb"], echo=lambda _: None)
    shutil.rmtree(stack_dir, ignore_errors=True)  # gigabytes of data; kept when the bench failed (its logs)
    if args.memory_only:
        lines = [f"{len(records)} ordinary records ({size_mb:.0f} MB), {args.large} large records ({large_mb:.0f} MB)", *memory]
        print("\n".join(lines))
        print(f"figures written to {write_figures('ingest-memory', lines)}")
        return 0
    a, b, c, d = (results[v]["rate"] for v in ("consumer", "raw", "naive", "reference"))
    lines = [
        f"(a) consumer {a:.0f} events/s, (b) raw baseline {b:.0f} events/s, (c) naive baseline {c:.0f} events/s "
        f"(first {results['naive']['records']} records)",
        f"(d) reference: sequential insert_many({settings.batch_size}) from memory, no Kafka {d:.0f} events/s "
        f"(a/d={a / d:.2f}; d/c={d / c:.1f}: how far batching alone gets on this server)",
        f"consumer peak RSS {results['consumer']['peak_rss_mb']:.0f} MB",
    ]
    if large:
        lines.append(
            f"large records: {large['rate']:.0f} events/s peak_rss_mb={large['peak_rss_mb']:.0f} "
            f"({large['records']} records, {large['mb']:.0f} MB)"
        )
    lines.extend(memory)
    lines.append(f"ratios a/b={a / b:.2f} a/c={a / c:.1f}")
    print("\n".join(lines))
    print(f"figures written to {write_figures('ingest', lines)}")  # docs/benchmarks/ingest.md, the one source the docs link
    return 0


if __name__ == "__main__":
    sys.exit(main())

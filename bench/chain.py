"""`make bench-chain`: the hourly chain's cost against history size, rebuild speed, vector migration speed.

1. ETL of one hour with --window touched sessions, over a history of --history sessions and then
   over 10x that history: the two times and their ratio (target <= 1.3: a window's cost must not
   grow with history).
2. Full rebuild (`run etl --full`) of --rebuild sessions: sessions/s next to a raw baseline in
   the same run (one $group pass over the same A records).
3. Vector migration (`run vectors --full`) of --vectors high examples: points/s next to raw
   qdrant-client upserts of the same points into a fresh collection (target >= 0.8).
Last line: `ratios history10x=X rebuild/raw=Y vectors/raw=Z`.

History is loaded straight into MongoDB, as the consumer would have stored it (validated
simulator records with `ingested_at` in past days). This measures the chain, not ingestion.
Small embeddings (--dim) keep loading fast; the vector part uses EMBEDDING_DIM-sized vectors.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from consumer.records import Position
from consumer.validate import Validator
from sentencify import mongo, stack, vectorstore
from sentencify.progress import Progress
from sentencify.schemas import BY_NAME
from sentencify.simulate import generate
from sentencify.steps.etl import run_etl
from sentencify.window import Window

WINDOW = Window.parse("2026-11-20T10:00:00+00:00")
HISTORY_START = datetime(2026, 10, 1, tzinfo=timezone.utc)


def load(db, sessions: int, *, seed: int, ingested: callable, dim: int, label: str) -> int:
    """Simulated sessions -> validated documents -> insert_many(1000) per collection."""
    validator = Validator(dim)
    buffers: dict[str, list] = {}
    bar = Progress(sessions * 5, label, unit="docs")
    n = 0
    for i, rec in enumerate(generate(sessions, seed=seed, anomalies=0.05, start=HISTORY_START, hours=24 * 40, embedding_dim=dim)):
        if rec.expect_collection is None:
            continue  # malformed: never stored
        doc = validator.validate(BY_NAME[rec.topic_suffix], orjson.loads(rec.value), Position("bench", 0, i))
        doc["ingested_at"] = ingested(i)
        buf = buffers.setdefault(rec.topic_suffix, [])
        buf.append(doc)
        if len(buf) == 1000:
            _flush(db, rec.topic_suffix, buf)
        n += 1
        bar.update()
    for collection, buf in buffers.items():
        _flush(db, collection, buf)
    bar.close()
    return n


def _flush(db, collection, buf):
    from pymongo.errors import BulkWriteError

    try:
        db[collection].insert_many(buf, ordered=False)
    except BulkWriteError:
        pass  # duplicated records of the simulator: stored once, like the consumer
    buf.clear()


def timed(f):
    began = time.perf_counter()
    out = f()
    return out, time.perf_counter() - began


def bench_history(db, history: int, window_sessions: int, dim: int) -> tuple[float, float]:
    past = lambda i: HISTORY_START + timedelta(seconds=i)  # noqa: E731 (ingested long before the window)
    in_window = lambda i: WINDOW.start + timedelta(seconds=i * 3599 / (window_sessions * 6))  # noqa: E731
    load(db, history, seed=1, ingested=past, dim=dim, label="history")
    load(db, window_sessions, seed=2, ingested=in_window, dim=dim, label="window")
    result, small = timed(lambda: run_etl(db, WINDOW))
    print(f"  ETL of one hour: {result.touched} touched sessions over {history} sessions of history: {small:.1f}s", flush=True)
    load(db, history * 9, seed=3, ingested=past, dim=dim, label="history x10")
    db.training_examples.delete_many({})  # the second run writes the same examples afresh
    result, large = timed(lambda: run_etl(db, WINDOW))
    print(f"  ETL of one hour: {result.touched} touched sessions over {history * 10} sessions of history: {large:.1f}s", flush=True)
    return small, large


def bench_rebuild(db, sessions: int, dim: int) -> tuple[float, float]:
    began = datetime(2026, 9, 1, tzinfo=timezone.utc)
    load(db, sessions, seed=4, ingested=lambda i: began + timedelta(seconds=i), dim=dim, label="rebuild set")
    everything = Window(began, began + timedelta(days=30))
    result, took = timed(lambda: run_etl(db, everything, full=True))  # `sentencify run etl --full`
    rate = result.touched / took
    raw, raw_took = timed(lambda: list(db.editor_recommend_options.aggregate([
        {"$sort": {"recommend_session_id": 1, "created_at": 1}},
        {"$group": {"_id": "$recommend_session_id", "a": {"$first": "$$ROOT"}}},
    ], allowDiskUse=True)))
    raw_rate = len(raw) / raw_took
    print(f"  full rebuild: {result.touched} sessions in {took:.1f}s = {rate:.0f} sessions/s; "
          f"raw $group pass: {len(raw)} sessions in {raw_took:.1f}s = {raw_rate:.0f} sessions/s", flush=True)
    return rate, raw_rate


def bench_vectors(db, qc, settings, count: int) -> tuple[float, float]:
    from qdrant_client import models

    from sentencify.steps.vectors import point, run_vectors

    rng = random.Random(5)
    dim = settings.embedding_dim
    now = datetime(2026, 11, 20, tzinfo=timezone.utc)
    docs = [{
        "_id": f"vec-{i}", "recommend_session_id": f"vec-{i}", "user_id": f"u{i % 500}", "doc_id": f"d{i % 900}",
        "context_embedding": [rng.uniform(-1, 1) for _ in range(dim)], "embedding_version": "v1",
        "consistency_flag": "high", "final_category": "email", "final_intensity": "weak",
        "executed_target_language": "ko", "was_accepted": True, "created_at": now,
    } for i in range(count)]
    for i in range(0, count, 1000):
        db.training_examples.insert_many(docs[i:i + 1000])
    vectorstore.ensure_collection(qc, settings.qdrant_collection, dim)
    # `sentencify run vectors --full`: every example, streamed from MongoDB into batched upserts.
    _, took = timed(lambda: run_vectors(db, qc, WINDOW, collection=settings.qdrant_collection, dim=dim,
                                        threshold=settings.vector_real_threshold, full=True))
    raw_points = [point(d) for d in docs]
    qc.create_collection("raw_baseline", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))

    def raw():
        for i in range(0, count, 256):
            qc.upsert("raw_baseline", points=raw_points[i:i + 256], wait=True)

    _, raw_took = timed(raw)
    rate, raw_rate = count / took, count / raw_took
    print(f"  vector migration: {count} points in {took:.1f}s = {rate:.0f} points/s; "
          f"raw upsert: {raw_rate:.0f} points/s", flush=True)
    return rate, raw_rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-chain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=50_000, help="sessions of history (then 10x)")
    parser.add_argument("--window", type=int, default=5_000, help="sessions touched in the measured hour")
    parser.add_argument("--rebuild", type=int, default=50_000, help="sessions of the full rebuild")
    parser.add_argument("--vectors", type=int, default=20_000, help="high examples migrated to Qdrant")
    parser.add_argument("--dim", type=int, default=16, help="embedding size of the loaded history")
    args = parser.parse_args(argv)

    stack_dir = Path(tempfile.mkdtemp(prefix="sentencify-bench-chain-"))
    stack_dir.chmod(0o755)
    settings = stack.private_settings(stack_dir)
    print(f"bench-chain: private MongoDB and local Qdrant in {stack_dir}", flush=True)
    stack.up(settings, only=["mongodb"], echo=lambda line: print(line, flush=True))
    client = mongo.client(settings.mongo_uri)
    try:
        hist_db = client["bench_history"]
        mongo.ensure_indexes(hist_db)
        print("1. window cost against history", flush=True)
        small, large = bench_history(hist_db, args.history, args.window, args.dim)
        print("2. full rebuild", flush=True)
        rebuild_db = client["bench_rebuild"]
        mongo.ensure_indexes(rebuild_db)
        rate, raw_rate = bench_rebuild(rebuild_db, args.rebuild, args.dim)
        print("3. vector migration", flush=True)
        qc = vectorstore.client(dataclasses.replace(settings, qdrant_path=str(stack_dir / "qdrant")))
        try:
            vec, vec_raw = bench_vectors(client["bench_vectors"], qc, settings, args.vectors)
        finally:
            qc.close()
    finally:
        client.close()
        stack.down(settings, only=["mongodb"], echo=lambda _: None)
    print(f"window ETL: {small:.1f}s over {args.history} sessions, {large:.1f}s over {args.history * 10} sessions")
    print(f"rebuild {rate:.0f} sessions/s vs raw {raw_rate:.0f}; vectors {vec:.0f} points/s vs raw {vec_raw:.0f}")
    print(f"ratios history10x={large / small:.2f} rebuild/raw={rate / raw_rate:.2f} vectors/raw={vec / vec_raw:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench-chain`: the hourly chain's cost against the cost of reading its data, and against history.

1. The hour, through the runner (lease and progress included, as `sentencify run` and Airflow run
   it): ETL of one hour with --window touched sessions over --history sessions, then over 10x that
   history (target history10x <= 1.3: a window's cost must not grow with history); then profile,
   vectors and views of the same hour: each step's time and throughput, and the chain's total.
   Baseline "raw window read" (same run): plain finds that read, once, every record of the
   touched sessions that the ETL needs, from every collection: the window by `ingested_at` range,
   the sessions' A, B and C by session id, their E, D and F by key (target window/raw >= 0.5).
2. Full rebuild (`run etl --full`) of --rebuild sessions, against "raw full read": one plain find
   over every collection the rebuild reads (target rebuild/raw >= 0.5). Also against reading plus
   writing its output (plain inserts of the same examples): the floor of any rebuild.
3. Vector migration (`run vectors --full`) of --vectors high examples, against raw qdrant-client
   upserts of the same points in batches of 256 into a fresh collection (target >= 0.9).
4. The join (sentencify.steps.join, a MongoDB aggregation pipeline) against the find-and-join it
   replaced (bench/find_join.py), on the same sessions in the same run: the window's touched
   sessions and the rebuild's every session (`agg/finds`, speed ratio; target >= 0.8).
5. Keeping up with ingestion: --ingest sessions produced to Kafka, stored by the consumer
   (IngestService, first record to last commit), then the whole chain over them, each step through
   the runner; `chain/ingest` = chain sessions/s over consumer sessions/s (goal >= 1.0). Each
   step also runs over an empty hour: its fixed cost per run; the rest is its cost per session.
Last line: `ratios history10x=X window/raw=Y rebuild/raw=Z vectors/raw=W agg/finds(window)=A
agg/finds(rebuild)=B chain/ingest=C`. The figures go to docs/benchmarks/chain.md (bench/report.py).

History is loaded straight into MongoDB, as the consumer would have stored it (validated
simulator records with `ingested_at` in past days). This measures the chain, not ingestion.
Small embeddings (--dim) keep loading fast; the vector part uses EMBEDDING_DIM-sized vectors.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from bench import find_join
from bench.report import write_figures
from consumer.records import Position
from consumer.validate import Validator
from sentencify import mongo, stack, vectorstore
from sentencify.progress import Progress
from sentencify.schemas import BY_NAME
from sentencify.simulate import generate
from sentencify.steps import examples, join, progress
from sentencify.steps.etl import F, decide, run_etl
from sentencify.steps.runner import STEPS, run_step
from sentencify.steps.touched import A, B, C, D, E, I, touched_sessions
from sentencify.window import Window

WINDOW = Window.parse("2026-11-20T10:00:00+00:00")
HISTORY_START = datetime(2026, 10, 1, tzinfo=UTC)


def load(db, sessions: int, *, seed: int, ingested: Callable[[int], datetime], dim: int, label: str) -> int:
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

    with contextlib.suppress(BulkWriteError):  # duplicated records of the simulator: stored once, like the consumer
        db[collection].insert_many(buf, ordered=False)
    buf.clear()


def timed(f, db=None):
    """(f(), seconds). With `db`: MongoDB first writes everything buffered to disk (a checkpoint),
    so a measurement does not pay for the load before it."""
    if db is not None:
        db.client.admin.command("fsync")
    began = time.perf_counter()
    out = f()
    return out, time.perf_counter() - began


def _from_window_start(db, window: Window = WINDOW) -> None:
    """Every step has processed everything before the window (as after earlier hourly runs)."""
    for step in STEPS:
        db[progress.PROGRESS].replace_one({"_id": step}, {"_id": step, "safe_until": window.start}, upsert=True)


def etl_parts(db, window: Window, whole: float) -> None:
    """Where an ETL run's time goes: its read-only parts, each timed alone after the run."""
    ids, touched_took = timed(lambda: sorted(touched_sessions(db, window)), db)
    (joined, orphans), gather_took = timed(lambda: join.gather(db, ids), db)
    _, decide_took = timed(lambda: decide(joined, orphans, examples.Rules(), datetime.now(UTC)))
    print(
        f"  the ETL's parts, each run alone: touched sessions {touched_took:.2f}s, gather (pipeline) {gather_took:.2f}s, "
        f"decide (examples.build) {decide_took:.2f}s; the whole run {whole:.2f}s (publish, lease and progress are the rest)",
        flush=True,
    )


def agg_vs_finds(db, label: str, agg, finds) -> float:
    """The pipeline's gather against the find-and-join on the same sessions: speed ratio (same output)."""
    (joined, orphans), agg_took = timed(agg, db)
    (ref_joined, ref_orphans), finds_took = timed(finds, db)
    if {j["_id"] for j in joined} != {j["_id"] for j in ref_joined} or set(orphans) != set(ref_orphans):
        raise SystemExit(f"{label}: the pipeline and the find-and-join gathered different sessions")
    n = len(joined) + len(orphans)
    print(
        f"  {label} gather of {n} sessions: aggregation pipeline {agg_took:.2f}s ({n / agg_took:.0f} sessions/s), "
        f"find-and-join {finds_took:.2f}s ({n / finds_took:.0f} sessions/s): agg/finds={finds_took / agg_took:.2f}",
        flush=True,
    )
    return finds_took / agg_took


def raw_window_read(db) -> tuple[int, int]:
    """Plain finds reading once every record of the touched sessions the ETL needs: (sessions, records).

    Lookups by many keys go in bounded `$in` batches, as the chain's (a 5,000-key `$in` costs the
    local server 35x more per key); so this is the cheapest plain reading, not a straw man."""
    from sentencify.mongo import find_in

    in_window = WINDOW.mongo_filter()
    window = {c: list(db[c].find(in_window)) for c in (A, B, C, I, D, E)}
    sessions = {d["recommend_session_id"] for c in (A, B, C, I) for d in window[c]}
    d_ids = [d["_id"] for d in window[D]]
    e_ids = [e["_id"] for e in window[E]]
    sessions |= {c["recommend_session_id"] for c in find_in(db[C], "correction_history_id", d_ids, {"recommend_session_id": 1})}
    sessions |= {a["recommend_session_id"] for a in find_in(db[A], "context_hash", e_ids, {"recommend_session_id": 1})}
    ids = sorted(sessions)
    records = sum(len(v) for v in window.values())
    outside = {"ingested_at": {"$not": {"$gte": WINDOW.start, "$lt": WINDOW.end}}}
    a = list(find_in(db[A], "recommend_session_id", ids, extra=outside))
    b = list(find_in(db[B], "recommend_session_id", ids, extra=outside))
    c = list(find_in(db[C], "recommend_session_id", ids, extra=outside))
    all_a, all_c = window[A] + a, window[C] + c
    have_e = {e["_id"] for e in window[E]}
    e = list(find_in(db[E], "_id", {x["context_hash"] for x in all_a} - have_e))
    have_d = {x["_id"] for x in window[D]}
    d = list(find_in(db[D], "_id", {x.get("correction_history_id") for x in all_c} - have_d))
    f = list(find_in(db[F], "doc_id", {x["doc_id"] for x in all_a}))
    return len(ids), records + len(a) + len(b) + len(c) + len(e) + len(d) + len(f)


def bench_history(db, settings, history: int, window_sessions: int, dim: int) -> dict:
    past = lambda i: HISTORY_START + timedelta(seconds=i)  # noqa: E731 (ingested long before the window)
    in_window = lambda i: WINDOW.start + timedelta(seconds=i * 3599 / (window_sessions * 6))  # noqa: E731
    load(db, history, seed=1, ingested=past, dim=dim, label="history")
    load(db, window_sessions, seed=2, ingested=in_window, dim=dim, label="window")
    s = dataclasses.replace(settings, mongo_db=db.name)
    _from_window_start(db)
    summary, small = timed(lambda: run_step("etl", WINDOW, s), db)
    touched = summary["touched_sessions"]
    print(f"  ETL of one hour: {touched} touched sessions over {history} sessions of history: {small:.1f}s", flush=True)
    (raw_sessions, raw_records), raw_took = timed(lambda: raw_window_read(db), db)
    print(f"  raw window read: {raw_sessions} sessions, {raw_records} records in {raw_took:.1f}s", flush=True)
    load(db, history * 9, seed=3, ingested=past, dim=dim, label="history x10")
    db.training_examples.delete_many({})  # the second run writes the same examples afresh
    _from_window_start(db)
    _, large = timed(lambda: run_step("etl", WINDOW, s), db)
    print(f"  ETL of one hour: {touched} touched sessions over {history * 10} sessions of history: {large:.1f}s", flush=True)
    ids = sorted(touched_sessions(db, WINDOW))
    agg_finds = agg_vs_finds(db, "window", lambda: join.gather(db, ids), lambda: find_join.gather(db, ids))
    etl_parts(db, WINDOW, large)
    steps = {"etl": (large, touched, "sessions")}
    for step in ("profile", "vectors", "views"):
        out, took = timed(lambda step=step: run_step(step, WINDOW, s), db)
        count, unit = {
            "profile": (out.get("users", 0), "users"),
            "vectors": (out.get("sessions", 0), "sessions"),
            "views": (out.get("sessions", 0), "sessions"),
        }[step]
        steps[step] = (took, count, unit)
    total = sum(t for t, _, _ in steps.values())
    print(
        "  the hour through the chain: "
        + ", ".join(f"{step} {t:.1f}s ({n / t:.0f} {unit}/s)" for step, (t, n, unit) in steps.items())
        + f"; total {total:.1f}s",
        flush=True,
    )
    return {
        "small": small,
        "large": large,
        "touched": touched,
        "raw": raw_took,
        "raw_sessions": raw_sessions,
        "steps": steps,
        "total": total,
        "agg_finds": agg_finds,
    }


def bench_rebuild(db, sessions: int, dim: int) -> tuple[float, float, float]:
    began = datetime(2026, 9, 1, tzinfo=UTC)
    load(db, sessions, seed=4, ingested=lambda i: began + timedelta(seconds=i), dim=dim, label="rebuild set")
    everything = Window(began, began + timedelta(days=30))
    result, took = timed(lambda: run_etl(db, everything, full=True), db)  # `sentencify run etl --full`
    rate = result.touched / took

    def raw_full_read() -> int:
        return sum(len(list(db[c].find({}, batch_size=5000))) for c in (A, B, C, D, E, F))

    records, raw_took = timed(raw_full_read, db)
    raw_rate = result.touched / raw_took  # the same sessions, at the speed of reading their records once
    print(
        f"  full rebuild: {result.touched} sessions in {took:.1f}s = {rate:.0f} sessions/s; "
        f"raw full read: {records} records in {raw_took:.1f}s = {raw_rate:.0f} sessions/s",
        flush=True,
    )
    # The rebuild must also write its output: plain inserts of the same examples (no transaction)
    # into a fresh collection. Reading plus that writing is as fast as any rebuild can be here.
    built = list(db.training_examples.find({}, batch_size=5000))

    def raw_insert() -> None:
        for i in range(0, len(built), 1000):
            db.raw_insert_baseline.insert_many(built[i : i + 1000])

    _, insert_took = timed(raw_insert, db)
    floor = raw_took + insert_took
    print(
        f"  raw insert of its {len(built)} examples: {insert_took:.1f}s; read + insert {floor:.1f}s "
        f"(rebuild/(read+insert)={floor / took:.2f}: as close as the rebuild gets to the cost of its data)",
        flush=True,
    )
    agg_finds = agg_vs_finds(db, "rebuild", lambda: join.gather_all(db), lambda: find_join.scan_all(db))
    return rate, raw_rate, agg_finds


def bench_vectors(db, qc, settings, count: int) -> tuple[float, float]:
    from qdrant_client import models

    from sentencify.steps.vectors import point, run_vectors

    rng = random.Random(5)
    dim = settings.embedding_dim
    now = datetime(2026, 11, 20, tzinfo=UTC)
    docs = [
        {
            "_id": f"vec-{i}",
            "recommend_session_id": f"vec-{i}",
            "user_id": f"u{i % 500}",
            "doc_id": f"d{i % 900}",
            "context_embedding": [rng.uniform(-1, 1) for _ in range(dim)],
            "embedding_version": "v1",
            "consistency_flag": "high",
            "final_category": "email",
            "final_intensity": "weak",
            "executed_target_language": "ko",
            "was_accepted": True,
            "created_at": now,
        }
        for i in range(count)
    ]
    for i in range(0, count, 1000):
        db.training_examples.insert_many(docs[i : i + 1000])
    vectorstore.ensure_collection(qc, settings.qdrant_collection, dim)
    # `sentencify run vectors --full`: every example, streamed from MongoDB into batched upserts.
    _, took = timed(
        db=db,
        f=lambda: run_vectors(
            db, qc, WINDOW, collection=settings.qdrant_collection, dim=dim, threshold=settings.vector_real_threshold, full=True
        ),
    )
    raw_points = [point(d) for d in docs]
    qc.create_collection("raw_baseline", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))

    def raw():
        for i in range(0, count, 256):
            qc.upsert("raw_baseline", points=raw_points[i : i + 256], wait=True)

    _, raw_took = timed(raw, db)
    rate, raw_rate = count / took, count / raw_took
    print(
        f"  vector migration: {count} points in {took:.1f}s = {rate:.0f} points/s; raw upsert: {raw_rate:.0f} points/s",
        flush=True,
    )
    return rate, raw_rate


EMPTY_HOUR = Window.parse("2020-01-01T00:00:00+00:00")  # no record was ingested then


def _count(out: dict, step: str) -> int:
    return out.get({"etl": "touched_sessions", "profile": "users"}.get(step, "sessions"), 0)


def bench_ingest_chain(settings, sessions: int) -> dict:
    """`sessions` through Kafka and the consumer, then through the chain: sessions/s of each, and
    each step's fixed cost per run (the same step over an empty hour) and cost per session."""
    from bench.ingest import run_consumer
    from sentencify.produce import produce
    from sentencify.stack.topics import create_topics

    s = dataclasses.replace(settings, mongo_db="bench_ingest_chain", topic_prefix="bench-chain.", consumer_group="bench-chain")
    create_topics(s)
    client = mongo.client(s.mongo_uri)
    db = client[s.mongo_db]
    mongo.ensure_indexes(db)
    records = list(generate(sessions, seed=6, anomalies=0.0, embedding_dim=s.embedding_dim))
    produce(s, records, total=len(records))
    began = datetime.now(UTC)
    consumed = run_consumer(s, len(records), s.consumer_group, 0)  # first record -> last commit
    window = Window(began - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1))
    ingest_rate = sessions / consumed["seconds"]
    print(
        f"  consumer: {len(records)} records of {sessions} sessions in {consumed['seconds']:.1f}s "
        f"= {ingest_rate:.0f} sessions/s ({len(records) / consumed['seconds']:.0f} events/s)",
        flush=True,
    )
    _from_window_start(db, window)
    steps = {}
    for step in STEPS:
        out, took = timed(lambda step=step: run_step(step, window, s), db)
        steps[step] = [took, _count(out, step)]
    etl_parts(db, window, steps["etl"][0])
    _from_window_start(db, EMPTY_HOUR)
    for step in STEPS:
        _, fixed = timed(lambda step=step: run_step(step, EMPTY_HOUR, s), db)
        steps[step].append(fixed)
    client.close()
    total = sum(t for t, _, _ in steps.values())
    chain_rate = sessions / total
    for step, (took, n, fixed) in steps.items():
        print(
            f"  {step}: {took:.2f}s for {n} {'users' if step == 'profile' else 'sessions'} = {fixed:.2f}s fixed per run "
            f"+ {(took - fixed) / sessions * 1000:.2f} ms per session",
            flush=True,
        )
    print(f"  the chain: {total:.1f}s = {chain_rate:.0f} sessions/s; chain/ingest={chain_rate / ingest_rate:.2f}", flush=True)
    return {"ingest_rate": ingest_rate, "chain_rate": chain_rate, "total": total, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-chain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=50_000, help="sessions of history (then 10x)")
    parser.add_argument("--window", type=int, default=5_000, help="sessions touched in the measured hour")
    parser.add_argument("--rebuild", type=int, default=50_000, help="sessions of the full rebuild")
    parser.add_argument("--vectors", type=int, default=20_000, help="high examples migrated to Qdrant")
    parser.add_argument("--dim", type=int, default=16, help="embedding size of the loaded history")
    parser.add_argument("--ingest", type=int, default=2_000, help="sessions through Kafka, the consumer and the chain")
    args = parser.parse_args(argv)

    load_start = os.getloadavg()[0]
    stack_dir = Path(tempfile.mkdtemp(prefix="sentencify-bench-chain-"))
    stack_dir.chmod(0o755)
    settings = stack.private_settings(stack_dir)
    settings = dataclasses.replace(settings, qdrant_path=str(stack_dir / "qdrant-chain"), embedding_dim=args.dim)
    services = ["kafka-storage", "kafka", "mongodb", "redis", "postgres"]
    print(f"bench-chain: private Kafka, MongoDB, Redis, PostgreSQL and local Qdrant in {stack_dir}", flush=True)
    stack.up(settings, only=services, echo=lambda line: print(line, flush=True))
    client = mongo.client(settings.mongo_uri)
    try:
        hist_db = client["bench_history"]
        mongo.ensure_indexes(hist_db)
        print("1. the hour: window cost against history, and the whole chain", flush=True)
        hour = bench_history(hist_db, settings, args.history, args.window, args.dim)
        small, large = hour["small"], hour["large"]
        print("2. full rebuild", flush=True)
        rebuild_db = client["bench_rebuild"]
        mongo.ensure_indexes(rebuild_db)
        rate, raw_rate, rebuild_agg_finds = bench_rebuild(rebuild_db, args.rebuild, args.dim)
        print("3. vector migration", flush=True)
        full_dim = dataclasses.replace(settings, embedding_dim=stack.private_settings(stack_dir).embedding_dim)
        qc = vectorstore.client(dataclasses.replace(full_dim, qdrant_path=str(stack_dir / "qdrant")))
        try:
            vec, vec_raw = bench_vectors(client["bench_vectors"], qc, full_dim, args.vectors)
        finally:
            qc.close()
        print("4. keeping up with ingestion: the consumer, then the chain, over the same sessions", flush=True)
        ingest = bench_ingest_chain(dataclasses.replace(full_dim, qdrant_path=str(stack_dir / "qdrant-ingest")), args.ingest)
    finally:
        client.close()
        stack.down(settings, only=services, echo=lambda _: None)
    shutil.rmtree(stack_dir, ignore_errors=True)  # gigabytes of data; kept when the bench failed (its logs)
    window_rate, raw_window_rate = hour["touched"] / small, hour["raw_sessions"] / hour["raw"]
    per_step = ", ".join(
        f"{step} {fixed:.2f}s fixed + {(t - fixed) / args.ingest * 1000:.2f} ms/session"
        for step, (t, _, fixed) in ingest["steps"].items()
    )
    load_end = os.getloadavg()[0]
    lines = [
        f"load average {load_start:.1f} at the start, {load_end:.1f} at the end ({os.cpu_count()} cores: above that, "
        "the machine was shared and the times are longer than its own)",
        f"window ETL: {small:.1f}s over {args.history} sessions, {large:.1f}s over {args.history * 10} sessions "
        f"({window_rate:.0f} sessions/s; raw window read {raw_window_rate:.0f} sessions/s)",
        f"the hour through the chain: {hour['total']:.1f}s",
        f"rebuild {rate:.0f} sessions/s vs raw {raw_rate:.0f}; vectors {vec:.0f} points/s vs raw {vec_raw:.0f}",
        f"ingestion {ingest['ingest_rate']:.0f} sessions/s, the chain {ingest['chain_rate']:.0f} sessions/s ({per_step})",
        f"ratios history10x={large / small:.2f} window/raw={window_rate / raw_window_rate:.2f} "
        f"rebuild/raw={rate / raw_rate:.2f} vectors/raw={vec / vec_raw:.2f} agg/finds(window)={hour['agg_finds']:.2f} "
        f"agg/finds(rebuild)={rebuild_agg_finds:.2f} chain/ingest={ingest['chain_rate'] / ingest['ingest_rate']:.2f}",
    ]
    print("\n".join(lines))
    print(f"figures written to {write_figures('chain', lines)}")  # docs/benchmarks/chain.md, the one source the docs link
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench-forget`: the time to erase one user with many records among many sessions, against a
user with few records in the same run (pipeline.md "Personal data"; the issue's target: 10,000
records among 100,000 sessions in under a minute).

1. Background: --sessions simulated sessions (other users), loaded straight into MongoDB as the
   consumer stores them (validated, `ingested_at` spread over 40 days), with small embeddings (--dim).
2. The measured users, ingested in one hour: "heavy" with --records records (sessions of E, A, B, C,
   D, I, all naming the user) and "light" with 12 records (two sessions); the whole chain runs over
   that hour, so each has examples, a profile in MongoDB and Redis, Qdrant points and PostgreSQL rows.
3. `sentencify forget` (Forget.run, the same code) of each user, timed; the query plans of the
   per-user reads (explain: an index scan, never a collection scan) are printed when the server
   explains them. Last line: `forget heavy=Xs (N records) light=Ys ratio=Z`.
The figures go to docs/benchmarks/forget.md (bench/report.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.chain import load
from bench.report import write_figures
from consumer.records import Position
from consumer.validate import Validator
from sentencify import mongo, stack
from sentencify.erasure.forget import Clients, Forget
from sentencify.erasure.keys import erasure_key
from sentencify.schemas import BY_CODE
from sentencify.steps import progress
from sentencify.steps.runner import STEPS, Stores, run_step
from sentencify.window import Window

HOUR = Window.parse("2026-11-20T10:00:00+00:00")


def user_records(user: str, records: int, dim: int) -> dict[str, list[dict]]:
    """`records` records of `user`, six per session (E, A, B, C, D, I), as the consumer stores them."""
    validator = Validator(dim)
    out: dict[str, list[dict]] = {}
    t = HOUR.start + timedelta(minutes=5)
    for i in range((records + 5) // 6):
        s, stamp = f"{user}-s{i}", (t + timedelta(seconds=i % 3000)).isoformat()
        rows = {
            "E": {"context_hash": f"h-{s}", "doc_id": f"doc-{user}-{i % 50}", "created_at": stamp, "user_id": user,
                  "selected_text": f"text {i}", "embedding_v1": [0.1 + (i % 7) / 10] * dim, "embedding_version": "v1"},
            "A": {"insert_id": f"a-{s}", "recommend_session_id": s, "doc_id": f"doc-{user}-{i % 50}", "context_hash": f"h-{s}",
                  "created_at": stamp, "user_id": user, "reco_category_input": "email"},
            "B": {"insert_id": f"b-{s}", "recommend_session_id": s, "source_recommend_event_id": f"a-{s}", "created_at": stamp,
                  "user_id": user, "target_category": "email", "target_intensity": "weak", "target_language": "ko"},
            "C": {"insert_id": f"c-{s}", "recommend_session_id": s, "source_recommend_event_id": f"a-{s}", "was_accepted": True,
                  "created_at": stamp, "user_id": user, "correction_history_id": f"d-{s}"},
            "D": {"correction_history_id": f"d-{s}", "created_at": stamp, "user": user, "user_prompt": f"prompt {i}"},
            "I": {"insert_id": f"i-{s}", "recommend_session_id": s, "created_at": stamp, "latency_ms": 50.0, "user_id": user},
        }  # fmt: skip
        for code, rec in rows.items():
            et = BY_CODE[code]
            doc = validator.validate(et, rec, Position("bench", 0, i))
            doc["ingested_at"] = HOUR.start + timedelta(minutes=30)
            out.setdefault(et.name, []).append(doc)
    return out


def explain_plans(db, user: str) -> list[str]:
    """The winning plan of each per-user read of the erasure (where the server explains)."""
    lines = []
    reads = {name: {"user_id": user} for name in ("editor_recommend_options", "editor_run_paraphrasing",
             "editor_selected_paraphrasing", "context_block", "recommend_log")}  # fmt: skip
    reads["correction_history"] = {"user": user}
    for name, query in reads.items():
        try:
            plan = db.command("explain", {"find": name, "filter": query}, verbosity="queryPlanner")
            stage = _stages(plan.get("queryPlanner", {}).get("winningPlan", {}))
        except Exception as exc:  # noqa: BLE001 (a server without explain: say so)
            stage = f"not explained ({type(exc).__name__})"
        lines.append(f"  plan {name} {query}: {stage}")
    return lines


def _stages(plan: dict) -> str:
    out = []
    while plan:
        out.append(plan.get("stage", "?") + (f"({plan['indexName']})" if plan.get("indexName") else ""))
        plan = plan.get("inputStage") or {}
    return " <- ".join(out) or "?"


def measure(settings, db, args, say) -> None:
    """The chain over the measured users' hour (every step's progress set to its start, as after
    earlier hourly runs: the background is history, not this hour's work), then each erasure, timed."""
    for step in STEPS:
        db[progress.PROGRESS].replace_one({"_id": step}, {"_id": step, "safe_until": HOUR.start}, upsert=True)
    began = time.monotonic()
    for step in STEPS:
        run_step(step, HOUR, settings)
    say(f"the chain over the measured users' hour: {time.monotonic() - began:.1f}s")
    stores = Stores.from_settings(settings)
    clients = Clients(stores.redis, stores.qdrant, stores.analytics, settings.qdrant_collection)
    key = erasure_key(settings)
    took: dict[str, float] = {}
    for name in ("bench-light", "bench-heavy", "bench-light2"):  # light twice: before and after the heavy one
        if name == "bench-light2":
            for coll, docs in user_records(name, 12, args.dim).items():
                db[coll].insert_many(docs)
        for line in explain_plans(db, name) if name == "bench-heavy" else []:
            say(line)
        db.client.admin.command("fsync")
        t0 = time.perf_counter()
        (erased,) = Forget(db, key, clients, lease_ttl_s=settings.lease_ttl_s).run([name])
        took[name] = time.perf_counter() - t0
        say(f"forget {name}: {took[name]:.2f}s, {sum(erased.removed.values())} documents removed {erased.removed}")
    heavy, light = took["bench-heavy"], (took["bench-light"] + took["bench-light2"]) / 2
    say(
        f"forget heavy={heavy:.1f}s ({args.records} records among {args.sessions} sessions) "
        f"light={light:.2f}s ratio={heavy / max(light, 1e-9):.0f} target heavy<60s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000, help="background sessions of other users")
    parser.add_argument("--records", type=int, default=10_000, help="records of the heavy user")
    parser.add_argument("--dim", type=int, default=8, help="embedding length (small: loading stays fast)")
    parser.add_argument("--keep", action="store_true", help="keep the stack directory")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="sentencify-bench-forget-"))
    root.chmod(0o755)
    settings = stack.private_settings(root, env=dict(os.environ) | {"EMBEDDING_DIM": str(args.dim)})
    settings = dataclasses.replace(settings, qdrant_path=str(root / "qdrant"), vector_real_threshold=1)
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        stack.up(settings, only=stack.CORE_SERVICES, echo=lambda line: None)
        client = mongo.client(settings.mongo_uri)
        db = client[settings.mongo_db]
        mongo.ensure_indexes(db)
        began = time.monotonic()
        start = datetime(2026, 10, 1, tzinfo=UTC)
        loaded = load(
            db, args.sessions, seed=7, ingested=lambda i: start + timedelta(seconds=i * 7), dim=args.dim, label="background"
        )
        say(f"background: {loaded} records of {args.sessions} sessions loaded in {time.monotonic() - began:.0f}s")
        users = {"heavy": args.records, "light": 12}
        for user, n in users.items():
            for name, docs in user_records(f"bench-{user}", n, args.dim).items():
                for i in range(0, len(docs), 1000):
                    db[name].insert_many(docs[i : i + 1000])
        measure(settings, db, args, say)
        write_figures("forget", lines, command="python -m bench.forget " + " ".join(argv if argv is not None else sys.argv[1:]))
        client.close()
        return 0
    finally:
        stack.down(settings, echo=lambda line: None)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

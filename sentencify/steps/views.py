"""Step 4: export aggregates from MongoDB into the analytics PostgreSQL database that Superset reads.

Per run, in one PostgreSQL transaction:
- hour-keyed facts (traffic, categories, latencies, dead letters) hold what the records
  *ingested* in one whole UTC hour contribute (column `window_start` = that ingestion hour),
  bucketed by event time. A run recomputes every whole ingestion hour its window reaches and
  replaces those hours' rows, so any set of windows, in any order, counts each record once: in
  the row of the hour it was ingested;
- entity facts (examples, sessions, users) are upserted for the sessions the window touched;
- the pipeline-run log is copied whole (it is small), and each stage's freshness is measured.
The SQL in `sql_views/` (tables, views, grants) is applied first; it is idempotent.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pymongo.database import Database

from sentencify.mongo import find_in
from sentencify.settings import PROJECT_ROOT
from sentencify.steps import freshness
from sentencify.steps.etl import EXAMPLES
from sentencify.steps.profiles import PROFILES
from sentencify.steps.publish import RUNS, run_id
from sentencify.steps.touched import A, B, C, E, I, chunks, touched_sessions
from sentencify.window import Window, floor_hour

log = logging.getLogger("sentencify.views")

SQL_DIR = PROJECT_ROOT / "sql_views"
DEAD_LETTERS = "dead_letters"


def insert_rows(cur, statement: str, rows: list[tuple]) -> None:
    """`statement` holds one `%s` for its VALUES list. psycopg2 (the CLI) gets `execute_values`;
    psycopg 3 (Airflow's PostgresHook with SQLAlchemy 2) gets `executemany`, which it pipelines."""
    if not rows:
        return
    if type(cur).__module__.startswith("psycopg2"):
        from psycopg2.extras import execute_values

        execute_values(cur, statement, rows, page_size=1000)
    else:
        cur.executemany(statement.replace("%s", "(" + ", ".join(["%s"] * len(rows[0])) + ")", 1), rows)


def apply_sql(conn, sql_dir: Path = SQL_DIR) -> list[str]:
    """Every `sql_views/*.sql`, in name order, in the caller's transaction."""
    applied = []
    with conn.cursor() as cur:
        for path in sorted(sql_dir.glob("*.sql")):
            cur.execute(path.read_text())
            applied.append(path.name)
    return applied


def whole_hours(window: Window) -> Window:
    """The whole UTC hours a window reaches: [floor(start), ceil(end))."""
    end = floor_hour(window.end)
    return Window(floor_hour(window.start), end if end == window.end else end + timedelta(hours=1))


def hour_facts(db: Database, hours: Window) -> dict[str, list[tuple]]:
    """What the records ingested in these whole hours add, by (ingestion hour, event hour) (no writes)."""
    in_hours = hours.mongo_filter()
    fields = {"created_at": 1, "ingested_at": 1}
    traffic: dict[tuple[datetime, datetime], Counter] = {}
    for collection, name in ((A, "recommendations"), (E, "contexts"), (B, "paraphrase_runs"), (C, "selections")):
        for doc in db[collection].find(in_hours, {**fields, "was_accepted": 1}):
            row = traffic.setdefault((floor_hour(doc["ingested_at"]), floor_hour(doc["created_at"])), Counter())
            row[name] += 1
            if collection == C and doc.get("was_accepted") is True:
                row["accepted"] += 1
    categories = Counter(
        (floor_hour(d["ingested_at"]), floor_hour(d["created_at"]), d.get("reco_category_input") or "(none)")
        for d in db[A].find(in_hours, {**fields, "reco_category_input": 1})
    )
    latency = [
        (floor_hour(d["ingested_at"]), floor_hour(d["created_at"]), float(d["latency_ms"]))
        for d in db[I].find(in_hours, {**fields, "latency_ms": 1})
    ]
    dead = Counter(
        (floor_hour(d["ingested_at"]), d["failed_at"].astimezone(UTC).date(), d["topic"], d["reason"])
        for d in db[DEAD_LETTERS].find(in_hours, {"ingested_at": 1, "failed_at": 1, "topic": 1, "reason": 1})
    )
    names = ("recommendations", "contexts", "paraphrase_runs", "selections", "accepted")
    return {
        "traffic": [(w, h, *(c[n] for n in names)) for (w, h), c in sorted(traffic.items())],
        "categories": [(w, h, cat, n) for (w, h, cat), n in sorted(categories.items())],
        "latency": latency,
        "dead_letters": [(w, day, topic, reason, n) for (w, day, topic, reason), n in sorted(dead.items())],
    }


def entity_facts(db: Database, sessions: list[str]) -> dict[str, list]:
    """Examples, sessions (funnel) and users of the touched sessions, as they stand now."""
    examples: list[tuple] = []
    gone: list[str] = []
    funnel: list[tuple] = []
    users: dict[str, tuple] = {}
    for part in chunks(sessions):
        found = {
            e["_id"]: e
            for e in find_in(
                db[EXAMPLES], "_id", part, {"created_at": 1, "consistency_flag": 1, "consistency_reasons": 1, "final_category": 1}
            )
        }
        for s in part:
            e = found.get(s)
            if e is None:
                gone.append(s)
            else:
                examples.append(
                    (
                        s,
                        floor_hour(e["created_at"]),
                        e["consistency_flag"],
                        list(e.get("consistency_reasons") or []),
                        e.get("final_category"),
                    )
                )
        has: dict[str, dict[str, bool]] = {s: {"a": False, "b": False, "c": False, "accepted": False} for s in part}
        session_users: set[str] = set()
        for collection, key in ((A, "a"), (B, "b"), (C, "c")):
            for d in find_in(
                db[collection], "recommend_session_id", part, {"recommend_session_id": 1, "user_id": 1, "was_accepted": 1}
            ):
                flags = has[d["recommend_session_id"]]
                flags[key] = True
                flags["accepted"] |= key == "c" and d.get("was_accepted") is True
                if d.get("user_id"):
                    session_users.add(d["user_id"])
        funnel += [(s, f["a"], f["b"], f["c"], f["accepted"]) for s, f in has.items()]
        for user_part in chunks(sorted(session_users - set(users))):
            # One index seek per user: a user's A records can number thousands, and one is enough.
            with_a = {u for u in user_part if db[A].find_one({"user_id": u}, {"_id": 1}) is not None}
            with_profile = {d["_id"] for d in find_in(db[PROFILES], "_id", user_part, {"_id": 1})}
            for u in user_part:
                users[u] = (u, u in with_a, u in with_profile)
    return {"examples": examples, "gone": gone, "sessions": funnel, "users": list(users.values())}


def consumer_state(redis_client) -> list[tuple]:
    """The consumers' status snapshots (consumer/status.py); expired ones are gone already."""
    from consumer.status import KEY_PREFIX

    out: list[tuple] = []
    if redis_client is None:
        return out
    for key in redis_client.scan_iter(match=KEY_PREFIX + "*", count=100):
        raw = redis_client.get(key)
        if raw:
            s = json.loads(raw)
            out.append((s["consumer"], s["group"], s["lag"], s.get("stored", 0), s.get("dead_letters", 0), s["updated_at"]))
    return out


LAG_REPORTS_KEPT = timedelta(days=7)  # a group silent for longer is gone, not stuck


def consumer_lag(redis_client, now: datetime | None = None) -> list[tuple]:
    """The last lag reported for every partition of every group (kept after the consumers stop)."""
    from consumer.status import LAG_KEY_PREFIX

    out: list[tuple] = []
    if redis_client is None:
        return out
    oldest = (now or datetime.now(UTC)) - LAG_REPORTS_KEPT
    for key in redis_client.scan_iter(match=LAG_KEY_PREFIX + "*", count=100):
        group = key.decode()[len(LAG_KEY_PREFIX) :]
        for partition, raw in redis_client.hgetall(key).items():
            s = json.loads(raw)
            if datetime.fromisoformat(s["reported_at"]) >= oldest:
                out.append((group, partition.decode(), s["lag"], s["reported_at"]))
    return out


def run_views(
    db: Database, conn, window: Window, redis_client=None, label: Window | None = None, safe_until: datetime | None = None
) -> dict:
    """`conn`: a psycopg2 connection to ANALYTICS_DB_URI (the caller owns and closes it); `window`: what
    to read; `label`: the hour the run stands for, in the pipeline-state table (default: `window`);
    `safe_until`: the progress this run will record (the views' own freshness)."""
    label = label or window
    hours = whole_hours(window)
    facts = hour_facts(db, hours)
    sessions = sorted(touched_sessions(db, window))
    entities = entity_facts(db, sessions)
    runs = [
        (r["step"], r["window_start"], r["window_end"], r["finished_at"], json.dumps(r.get("summary") or {}, default=str))
        for r in db[RUNS].find({"_id": {"$ne": run_id("views", label)}})
    ]
    # This run too, so the dashboard's pipeline state includes the step that wrote it.
    runs.append(("views", label.start, label.end, datetime.now(UTC), json.dumps({"sessions": len(sessions)})))
    consumers = consumer_state(redis_client)
    lags = consumer_lag(redis_client)
    fresh = freshness.measure(db, redis_client, safe_until, datetime.now(UTC), since=hours.start)
    with conn:  # one transaction: readers see the old window's rows or the new ones
        applied = apply_sql(conn)
        with conn.cursor() as cur:
            for table in ("fact_traffic", "fact_categories", "fact_latency", "fact_dead_letters"):
                cur.execute(
                    f"delete from sentencify.{table} where window_start >= %s and window_start < %s", (hours.start, hours.end)
                )
            insert_rows(cur, "insert into sentencify.fact_traffic values %s", facts["traffic"])
            insert_rows(cur, "insert into sentencify.fact_categories values %s", facts["categories"])
            insert_rows(cur, "insert into sentencify.fact_latency values %s", facts["latency"])
            insert_rows(cur, "insert into sentencify.fact_dead_letters values %s", facts["dead_letters"])
            insert_rows(
                cur,
                """insert into sentencify.fact_examples (example_id, created_hour, consistency_flag, reasons, category)
                values %s on conflict (example_id) do update set created_hour = excluded.created_hour,
                consistency_flag = excluded.consistency_flag, reasons = excluded.reasons, category = excluded.category""",
                entities["examples"],
            )
            if entities["gone"]:
                cur.execute("delete from sentencify.fact_examples where example_id = any(%s)", (entities["gone"],))
            insert_rows(
                cur,
                """insert into sentencify.fact_sessions values %s on conflict (session_id) do update set
                has_a = excluded.has_a, has_b = excluded.has_b, has_c = excluded.has_c, accepted = excluded.accepted""",
                entities["sessions"],
            )
            insert_rows(
                cur,
                """insert into sentencify.fact_users values %s on conflict (user_id) do update set
                has_a = excluded.has_a, has_profile = excluded.has_profile""",
                entities["users"],
            )
            cur.execute("delete from sentencify.pipeline_runs")
            insert_rows(cur, "insert into sentencify.pipeline_runs values %s", runs)
            cur.execute("delete from sentencify.consumer_state")
            insert_rows(cur, "insert into sentencify.consumer_state values %s", consumers)
            cur.execute("delete from sentencify.consumer_partition_lag")
            insert_rows(cur, "insert into sentencify.consumer_partition_lag values %s", lags)
            cur.execute("delete from sentencify.freshness")
            insert_rows(cur, "insert into sentencify.freshness values %s", fresh)
    summary = {
        "window": str(window),
        "hours": str(hours),
        "sql": applied,
        "sessions": len(sessions),
        "traffic_hours": len(facts["traffic"]),
        "latencies": len(facts["latency"]),
        "examples": len(entities["examples"]),
        "users": len(entities["users"]),
    }
    log.info("views done", extra={"fields": summary})
    return summary

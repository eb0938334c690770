"""Step 4: export aggregates from MongoDB into the analytics PostgreSQL database that Superset reads.

Per run, in PostgreSQL transactions of bounded size (pipeline.md, opening):
- hour-keyed facts (traffic, categories, latencies, dead letters) hold what the records
  *ingested* in one whole UTC hour contribute (column `window_start` = that ingestion hour),
  bucketed by event time. A run recomputes every whole ingestion hour its window reaches and
  replaces those hours' rows (`HOURS_PER_TRANSACTION` hours per transaction, each hour whole), so
  any set of windows, in any order, counts each record once: in the row of the hour it was ingested;
- entity facts (examples, sessions, users) are upserted for the sessions the window touched,
  `TRANSACTION_DOCS` sessions per transaction; a row PostgreSQL refuses is isolated by bisection
  and its session quarantined (sentencify.steps.quarantine), the rest published;
- the pipeline-run log, the quarantine and the ingestion gaps are copied whole (they are small),
  and each stage's freshness is measured, in one last transaction.
`full=True` re-exports every fact: every ingestion hour, every session, example and user, and
deletes the rows of what MongoDB no longer holds. Every value goes through `stores.postgres`.
The SQL in `sql_views/` (tables, views, grants) is applied first, only when it changed (`apply_sql`); it is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo.database import Database

from sentencify import contract
from sentencify.erasure import report as erasures
from sentencify.mongo import find_in
from sentencify.schemas import EVENT_TYPES
from sentencify.settings import PROJECT_ROOT
from sentencify.steps import census, freshness
from sentencify.steps.drift import Drift, pages
from sentencify.steps.etl import EXAMPLES
from sentencify.steps.fence import NO_FENCE, Fence
from sentencify.steps.profiles import PROFILES
from sentencify.steps.publish import RUNS, run_id
from sentencify.steps.quarantine import Quarantined, bisect, current, settle
from sentencify.steps.touched import A, B, C, E, I, chunks, touched_sessions
from sentencify.stores import postgres
from sentencify.stores.mongodb import TRANSACTION_DOCS
from sentencify.window import Window, floor_hour

log = logging.getLogger("sentencify.views")

SQL_DIR = PROJECT_ROOT / "sql_views"
DEAD_LETTERS = contract.DEAD_LETTERS


def insert_rows(cur: Any, statement: str, rows: list[tuple]) -> None:
    """`statement` holds one `%s` for its VALUES list. psycopg2 (the CLI) gets `execute_values`;
    psycopg 3 (Airflow's PostgresHook with SQLAlchemy 2) gets `executemany`, which it pipelines."""
    if not rows:
        return
    rows = [postgres.row(r) for r in rows]  # text without NUL (stores.postgres)
    if type(cur).__module__.startswith("psycopg2"):
        from psycopg2.extras import execute_values

        execute_values(cur, statement, rows, page_size=1000)
    else:
        cur.executemany(statement.replace("%s", "(" + ", ".join(["%s"] * len(rows[0])) + ")", 1), rows)


@contextmanager
def transaction(conn: Any) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back on an error. psycopg2's `with
    conn` does that (and leaves the connection open); psycopg 3's does not (it closes it)."""
    if hasattr(conn, "transaction"):  # psycopg 3
        with conn.transaction():
            yield
    else:
        with conn:
            yield


# What SQL was last applied: its checksum, compared before any DDL. `create or replace view` and
# `alter table ... add column if not exists` take an ACCESS EXCLUSIVE lock even when nothing
# changes, so a reader's open transaction would block the step, and every dashboard query would
# queue behind it (pipeline.md "Bounds at any size"): the files are applied only when they changed.
_APPLIED_DDL = """create table if not exists sentencify.sql_views_applied (
  name text primary key, checksum text not null, applied_at timestamptz not null default now())"""
_APPLIED_SET = """insert into sentencify.sql_views_applied (name, checksum) values ('sql_views', %s)
on conflict (name) do update set checksum = excluded.checksum, applied_at = now()"""


def sql_checksum(paths: list[Path]) -> str:
    """SHA-256 (hex) of the files' names and contents, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


_RELATION = re.compile(r"create (?:table if not exists|or replace view) sentencify\.(\w+)", re.IGNORECASE)


def apply_sql(conn: Any, sql_dir: Path = SQL_DIR) -> list[str]:
    """Every `sql_views/*.sql`, in name order, in the caller's transaction, when they differ from
    the files applied last (their checksum in `sentencify.sql_views_applied`); else nothing, and
    no lock is taken. Returns the names applied."""
    paths = sorted(sql_dir.glob("*.sql"))
    checksum = sql_checksum(paths)
    relations = sorted({m for p in paths for m in _RELATION.findall(p.read_text())})
    with conn.cursor() as cur:
        cur.execute("select to_regclass('sentencify.sql_views_applied') is not null")
        if cur.fetchone()[0]:
            cur.execute("select checksum from sentencify.sql_views_applied where name = 'sql_views'")
            same = (cur.fetchone() or (None,))[0] == checksum
            # and every table and view still there (one dropped by hand is made again: stores agree)
            cur.execute("select count(*) from unnest(%s::text[]) r where to_regclass('sentencify.' || r) is null", (relations,))
            if same and cur.fetchone()[0] == 0:
                return []
        applied = []
        for path in paths:
            cur.execute(path.read_text())
            applied.append(path.name)
        cur.execute(_APPLIED_DDL)
        cur.execute(_APPLIED_SET, (checksum,))
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
    # Text keys made storable before counting: two spellings that PostgreSQL stores alike are one row.
    categories = Counter(
        (floor_hour(d["ingested_at"]), floor_hour(d["created_at"]), _text(d.get("reco_category_input")) or "(none)")
        for d in db[A].find(in_hours, {**fields, "reco_category_input": 1})
    )
    latency = [
        (floor_hour(d["ingested_at"]), floor_hour(d["created_at"]), ms)
        for d in db[I].find(in_hours, {**fields, "latency_ms": 1})
        if (ms := _finite(d.get("latency_ms"))) is not None and ms >= 0  # no measurement otherwise (events.md: >= 0)
    ]
    dead = Counter(
        (floor_hour(d["ingested_at"]), d["failed_at"].astimezone(UTC).date(), _text(d["topic"]), _text(d["reason"]))
        for d in db[DEAD_LETTERS].find(in_hours, {"ingested_at": 1, "failed_at": 1, "topic": 1, "reason": 1})
    )
    names = ("recommendations", "contexts", "paraphrase_runs", "selections", "accepted")
    return {
        "traffic": [(w, h, *(c[n] for n in names)) for (w, h), c in sorted(traffic.items())],
        "categories": [(w, h, cat, n) for (w, h, cat), n in sorted(categories.items())],
        "latency": latency,
        "dead_letters": [(w, day, topic, reason, n) for (w, day, topic, reason), n in sorted(dead.items())],
    }


def _text(v: Any) -> str | None:
    """A text column's value: PostgreSQL's form of a string, None for a missing value, and the
    string form of anything else a record carries (an unknown field type)."""
    return None if v is None else postgres.text(v if isinstance(v, str) else str(v))


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def entity_facts(
    db: Database, sessions: list[str], seen_users: set[str] | None = None, with_users: bool = True
) -> dict[str, list]:
    """Examples, sessions (funnel) and users of the touched sessions, as they stand now. Ids stay
    as MongoDB holds them (rows are made storable when written); `seen_users`: users already
    computed by this run (skipped); `with_users=False`: no users (a full run walks them apart)."""
    examples: list[tuple] = []
    gone: list[str] = []
    funnel: list[tuple] = []
    users: dict[str, tuple] = {}
    seen_users = seen_users if seen_users is not None else set()
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
                        _text(e["consistency_flag"]),
                        [_text(r) for r in e.get("consistency_reasons") or []],
                        _text(e.get("final_category")),
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
        if with_users:
            users.update((r[0], r) for r in user_facts(db, sorted(session_users - set(users) - seen_users)))
    return {"examples": examples, "gone": gone, "sessions": funnel, "users": list(users.values())}


def user_facts(db: Database, user_ids: list[str]) -> list[tuple]:
    """(user_id, has an A, has a profile) of each user."""
    out: list[tuple] = []
    for user_part in chunks(user_ids):
        # One index seek per user: a user's A records can number thousands, and one is enough.
        with_a = {u for u in user_part if db[A].find_one({"user_id": u}, {"_id": 1}) is not None}
        with_profile = {d["_id"] for d in find_in(db[PROFILES], "_id", user_part, {"_id": 1})}
        out += [(u, u in with_a, u in with_profile) for u in user_part]
    return out


def consumer_state(redis_client: Any) -> list[tuple]:
    """The consumers' status snapshots (consumer/status.py); expired ones are gone already."""
    out: list[tuple] = []
    if redis_client is None:
        return out
    for key in redis_client.scan_iter(match=contract.CONSUMER_STATUS_KEY_PREFIX + "*", count=100):
        raw = redis_client.get(key)
        if raw:
            s = json.loads(raw)
            out.append((s["consumer"], s["group"], s["lag"], s.get("stored", 0), s.get("dead_letters", 0), s["updated_at"]))
    return out


def store_agreement(db: Database) -> list[tuple]:
    """The last check of each derived store (`sentencify verify`'s `store_checks`), as rows of
    `sentencify.store_agreement`: the counts it found, whether the store agrees now."""
    rows = []
    for c in db[census.CHECKS].find({}, sort=[("_id", 1)]):
        found = c.get("found") or {}
        counts = [int(found.get(k) or 0) for k in ("missing", "extra", "different")]
        flags = [bool(c.get("repaired")), bool(c.get("agrees"))]
        rows.append((c["_id"], c.get("step") or "", *counts, *flags, c["checked_at"], c.get("agreed_at")))
    return rows


def ingestion_gaps(db: Database) -> list[tuple]:
    """Every recorded ingestion gap (sentencify/gaps.py), as sentencify.ingestion_gaps rows."""
    from sentencify import gaps

    return [
        (
            *(g["_id"], g["topic"], g["partition"], g["first_offset"], g.get("last_offset"), g.get("count")),
            *(g.get("at_least") or 0, g["reason"], g["found_at"], bool(g.get("acknowledged")), g.get("acknowledged_at")),
        )
        for g in gaps.listing(db)
    ]


LAG_REPORTS_KEPT = timedelta(days=7)  # a group silent for longer is gone, not stuck


def consumer_lag(redis_client: Any, now: datetime | None = None) -> list[tuple]:
    """The last lag reported for every partition of every group (kept after the consumers stop)."""
    out: list[tuple] = []
    if redis_client is None:
        return out
    oldest = (now or datetime.now(UTC)) - LAG_REPORTS_KEPT
    for key in redis_client.scan_iter(match=contract.CONSUMER_LAG_KEY_PREFIX + "*", count=100):
        group = key.decode()[len(contract.CONSUMER_LAG_KEY_PREFIX) :]
        for partition, raw in redis_client.hgetall(key).items():
            s = json.loads(raw)
            if datetime.fromisoformat(s["reported_at"]) >= oldest:
                out.append((group, partition.decode(), s["lag"], s["reported_at"]))
    return out


HOURS_PER_TRANSACTION = 24  # hour facts replaced per transaction (a day of one store's rows)
_FACT_TABLES = ("fact_traffic", "fact_categories", "fact_latency", "fact_dead_letters")
FACT_TABLES_ALL = (*_FACT_TABLES, "fact_examples", "fact_sessions", "fact_users")  # what the step's census counts


def _replace_hours(cur: Any, hours: Window, facts: dict[str, list[tuple]]) -> None:
    for table in _FACT_TABLES:
        cur.execute(f"delete from sentencify.{table} where window_start >= %s and window_start < %s", (hours.start, hours.end))
    insert_rows(cur, "insert into sentencify.fact_traffic values %s", facts["traffic"])
    insert_rows(cur, "insert into sentencify.fact_categories values %s", facts["categories"])
    insert_rows(cur, "insert into sentencify.fact_latency values %s", facts["latency"])
    insert_rows(cur, "insert into sentencify.fact_dead_letters values %s", facts["dead_letters"])


def _unique(rows: list[tuple]) -> list[tuple]:
    """Rows made storable, one per key (first column): two ids PostgreSQL stores alike (a NUL and
    a U+FFFD) would make one upsert touch a row twice, which PostgreSQL refuses."""
    return list({r[0]: r for r in (postgres.row(r) for r in rows)}.values())


_ENTITY_KINDS = ("examples", "gone", "sessions", "users")


def _write_entities(conn: Any, entities: dict[str, list]) -> None:
    """One transaction: these examples, sessions and users as computed, gone examples deleted."""
    with transaction(conn), conn.cursor() as cur:
        insert_rows(
            cur,
            """insert into sentencify.fact_examples (example_id, created_hour, consistency_flag, reasons, category)
            values %s on conflict (example_id) do update set created_hour = excluded.created_hour,
            consistency_flag = excluded.consistency_flag, reasons = excluded.reasons, category = excluded.category""",
            _unique(entities["examples"]),
        )
        if entities["gone"]:
            gone = [postgres.text(s) for s in entities["gone"]]
            cur.execute("delete from sentencify.fact_examples where example_id = any(%s)", (gone,))
        insert_rows(
            cur,
            """insert into sentencify.fact_sessions values %s on conflict (session_id) do update set
            has_a = excluded.has_a, has_b = excluded.has_b, has_c = excluded.has_c, accepted = excluded.accepted""",
            _unique(entities["sessions"]),
        )
        insert_rows(
            cur,
            """insert into sentencify.fact_users values %s on conflict (user_id) do update set
            has_a = excluded.has_a, has_profile = excluded.has_profile""",
            _unique(entities["users"]),
        )


def _export_entities(db: Database, conn: Any, sessions: list[str], quarantined: Quarantined) -> tuple[int, int, set[str]]:
    """Entity facts of `sessions`, `TRANSACTION_DOCS` sessions per transaction; a session whose rows
    PostgreSQL refuses is found by bisection and quarantined. Returns (examples, users, user ids)."""
    seen_users: set[str] = set()
    n_examples = 0
    for part in chunks(sessions, TRANSACTION_DOCS):
        entities = entity_facts(db, part, seen_users)
        by_session: dict[str, dict[str, list]] = {s: {"examples": [], "gone": [], "sessions": [], "users": []} for s in part}
        for row in entities["examples"]:
            by_session[row[0]]["examples"].append(row)
        for s in entities["gone"]:
            by_session[s]["gone"].append(s)
        for row in entities["sessions"]:
            by_session[row[0]]["sessions"].append(row)

        def write(items: list[str], by_session: dict = by_session) -> None:
            _write_entities(conn, {k: [x for s in items for x in by_session[s][k]] for k in _ENTITY_KINDS})

        for session, exc in bisect(part, write, postgres.is_data_error):
            quarantined.add(session, "row_refused", exc)

        def write_users(items: list[tuple]) -> None:
            _write_entities(conn, {"examples": [], "gone": [], "sessions": [], "users": list(items)})

        for user_row, exc in bisect(entities["users"], write_users, postgres.is_data_error):
            quarantined.add(f"user:{user_row[0]}", "row_refused", exc)
        seen_users.update(u[0] for u in entities["users"])
        n_examples += len(entities["examples"])
    return n_examples, len(seen_users), seen_users


def ingested_hours(db: Database) -> Window | None:
    """The whole hours from the first record ingested to the last (any log or dead letter), or None."""
    from pymongo import ASCENDING, DESCENDING

    ends: list[datetime] = []
    for collection in (*(et.name for et in EVENT_TYPES), DEAD_LETTERS):
        for order in (ASCENDING, DESCENDING):
            doc = db[collection].find_one({"ingested_at": {"$type": "date"}}, {"ingested_at": 1}, sort=[("ingested_at", order)])
            if doc is not None:
                ends.append(doc["ingested_at"])
    if not ends:
        return None
    return whole_hours(Window(min(ends), max(ends) + timedelta(microseconds=1)))


def _export_hours(db: Database, conn: Any, hours: Window | None) -> tuple[int, int]:
    """The hour-keyed facts of these whole hours replaced, HOURS_PER_TRANSACTION hours per
    transaction. Returns (traffic rows, latencies) written."""
    traffic_hours = latencies = 0
    if hours is None:
        return 0, 0
    cursor = hours.start
    while cursor < hours.end:
        part = Window(cursor, min(cursor + timedelta(hours=HOURS_PER_TRANSACTION), hours.end))
        facts = hour_facts(db, part)
        with transaction(conn), conn.cursor() as cur:
            _replace_hours(cur, part, facts)
        traffic_hours += len(facts["traffic"])
        latencies += len(facts["latency"])
        cursor = part.end
    return traffic_hours, latencies


FACT_HOURS, FACT_EXAMPLES, FACT_SESSIONS, FACT_USERS = "fact_hours", "fact_examples", "fact_sessions", "fact_users"
PAGE = TRANSACTION_DOCS  # sessions (users, rows) compared per page of a full run: the memory bound
_COLUMNS = {
    FACT_EXAMPLES: ("example_id", "created_hour", "consistency_flag", "reasons", "category"),
    FACT_SESSIONS: ("session_id", "has_a", "has_b", "has_c", "accepted"),
    FACT_USERS: ("user_id", "has_a", "has_profile"),
}
_HOUR_COLUMNS = {
    "fact_traffic": "window_start, event_hour, recommendations, contexts, paraphrase_runs, selections, accepted",
    "fact_categories": "window_start, event_hour, category, recommendations",
    "fact_latency": "window_start, event_hour, latency_ms",
    "fact_dead_letters": "window_start, day, topic, reason, dead_letters",
}
_HOUR_FACTS = {
    "fact_traffic": "traffic",
    "fact_categories": "categories",
    "fact_latency": "latency",
    "fact_dead_letters": "dead_letters",
}


def _canonical(row: tuple) -> tuple:
    """A row as PostgreSQL gives it back, whatever the session's time zone: UTC times, lists as tuples."""
    return tuple(
        v.astimezone(UTC) if isinstance(v, datetime) else tuple(v) if isinstance(v, list) else v for v in postgres.row(row)
    )


def reconcile(db: Database, conn: Any, *, repair: bool, quarantined: Quarantined | None = None) -> dict[str, Drift]:
    """Every fact compared with what MongoDB implies, a page at a time (pipeline.md, "Derived
    stores agree with MongoDB"); with `repair` the differences are written, else only counted.
    Returns the drift of `fact_hours` (the hour-keyed tables, counted by ingestion hour),
    `fact_examples`, `fact_sessions` and `fact_users` (by key). Each pass holds one page: a day of
    hours, PAGE sessions, users or rows."""
    quarantined = quarantined if quarantined is not None else Quarantined("views")
    drift = {name: Drift(name) for name in (FACT_HOURS, FACT_EXAMPLES, FACT_SESSIONS, FACT_USERS)}
    _reconcile_hours(db, conn, drift[FACT_HOURS], repair)
    from sentencify.steps import join  # the sessions and users a full run walks

    for page in pages(join.session_ids(db, (A, B, C, I)), PAGE):
        page.sort()
        facts = entity_facts(db, page, with_users=False)
        examples = {r[0]: r for r in facts["examples"]}
        sessions = {r[0]: r for r in facts["sessions"]}
        stale_examples = _stale(conn, FACT_EXAMPLES, examples, drift[FACT_EXAMPLES])
        stale_sessions = _stale(conn, FACT_SESSIONS, sessions, drift[FACT_SESSIONS])
        if repair:
            entities = {"examples": stale_examples, "gone": [], "sessions": stale_sessions, "users": []}
            _write_bisected(conn, entities, quarantined)
    for page in pages(join.session_ids(db, (A, B, C), "user_id"), PAGE):
        page.sort()
        stale_users = _stale(conn, FACT_USERS, {r[0]: r for r in user_facts(db, page)}, drift[FACT_USERS])
        if repair:
            _write_bisected(conn, {"examples": [], "gone": [], "sessions": [], "users": stale_users}, quarantined)
    _remove_absent(db, conn, drift, repair)
    return drift


def _stale(conn: Any, table: str, expected: dict[str, tuple], drift: Drift) -> list[tuple]:
    """The rows of `expected` (key -> row) that `table` lacks or holds otherwise, counted in `drift`."""
    if not expected:
        return []
    columns = _COLUMNS[table]
    keys = {postgres.text(k): k for k in expected}
    with transaction(conn), conn.cursor() as cur:
        cur.execute(f"select {', '.join(columns)} from sentencify.{table} where {columns[0]} = any(%s)", (list(keys),))
        stored = {r[0]: _canonical(tuple(r)) for r in cur.fetchall()}
    stale = []
    for key, original in keys.items():
        row = expected[original]
        if key not in stored:
            drift.add("missing", [original])
        elif stored[key] != _canonical(row):
            drift.add("different", [original])
        else:
            continue
        stale.append(row)
    return stale


def _write_bisected(conn: Any, entities: dict[str, list], quarantined: Quarantined) -> None:
    """These rows written (one transaction, bisected on a refusal: the row at fault is quarantined)."""
    items = [(kind, row) for kind in _ENTITY_KINDS for row in entities[kind]]

    def write(part: list[tuple[str, tuple]]) -> None:
        _write_entities(conn, {k: [r for kind, r in part if kind == k] for k in _ENTITY_KINDS})

    for (kind, row), exc in bisect(items, write, postgres.is_data_error):
        quarantined.add(f"user:{row[0]}" if kind == "users" else row[0], "row_refused", exc)


def _count_rows(conn: Any, table: str) -> int:
    with transaction(conn), conn.cursor() as cur:
        cur.execute(f"select count(*) from sentencify.{table}")
        return int(cur.fetchone()[0])


def _remove_absent(db: Database, conn: Any, drift: dict[str, Drift], repair: bool) -> None:
    """Rows whose example, session or user MongoDB no longer holds (keyset pages of PAGE keys)."""
    from sentencify.steps import join

    alive_of = {
        FACT_EXAMPLES: lambda ids: {d["_id"] for d in find_in(db[EXAMPLES], "_id", ids, {"_id": 1})},
        FACT_SESSIONS: lambda ids: join.having(db, (A, B, C, I), "recommend_session_id", ids),
        FACT_USERS: lambda ids: join.having(db, (A, B, C), "user_id", ids),
    }
    for table, alive in alive_of.items():
        key = _COLUMNS[table][0]
        after = ""
        while True:
            with transaction(conn), conn.cursor() as cur:
                cur.execute(
                    f'select {key} from sentencify.{table} where {key} collate "C" > %s order by {key} collate "C" limit %s',
                    (after, PAGE),
                )
                ids = [r[0] for r in cur.fetchall()]
            if not ids:
                break
            after = ids[-1]
            living = {postgres.text(x) for x in alive(ids)}
            gone = [k for k in ids if k not in living]
            drift[table].add("extra", gone)
            if repair and gone:
                with transaction(conn), conn.cursor() as cur:
                    cur.execute(f"delete from sentencify.{table} where {key} = any(%s)", (gone,))


def _reconcile_hours(db: Database, conn: Any, drift: Drift, repair: bool) -> None:
    """The hour-keyed facts compared a day of ingestion hours at a time; a differing day is
    replaced whole (with `repair`); rows of hours that hold no record any more are extra."""
    hours = ingested_hours(db)
    cursor = hours.start if hours else None
    while hours is not None and cursor is not None and cursor < hours.end:
        part = Window(cursor, min(cursor + timedelta(hours=HOURS_PER_TRANSACTION), hours.end))
        facts = hour_facts(db, part)
        with transaction(conn), conn.cursor() as cur:
            differing: set[datetime] = set()
            for table, kind in _HOUR_FACTS.items():
                cur.execute(
                    f"select {_HOUR_COLUMNS[table]} from sentencify.{table} where window_start >= %s and window_start < %s",
                    (part.start, part.end),
                )
                stored = Counter(_canonical(tuple(r)) for r in cur.fetchall())
                wanted = Counter(_canonical(r) for r in facts[kind])
                differing |= {row[0] for row in (stored - wanted) + (wanted - stored)}
        drift.add("different", sorted(h.isoformat() for h in differing))
        if repair and differing:
            with transaction(conn), conn.cursor() as cur:
                _replace_hours(cur, part, facts)
        cursor = part.end
    with transaction(conn), conn.cursor() as cur:
        outside = "true" if hours is None else "window_start < %s or window_start >= %s"
        args = () if hours is None else (hours.start, hours.end)
        found: set = set()
        for table in _HOUR_FACTS:
            cur.execute(f"select distinct window_start from sentencify.{table} where {outside}", args)
            found |= {r[0] for r in cur.fetchall()}
        drift.add("extra", sorted(h.astimezone(UTC).isoformat() for h in found))
        if repair and found:
            for table in _HOUR_FACTS:
                cur.execute(f"delete from sentencify.{table} where {outside}", args)


def run_views(
    db: Database,
    conn: Any,
    window: Window,
    redis_client: Any = None,
    label: Window | None = None,
    safe_until: datetime | None = None,
    full: bool = False,
    fence: Fence = NO_FENCE,
    qdrant_marker: str | bool | None = False,
) -> dict:
    """`conn`: a psycopg2 (or psycopg 3) connection to ANALYTICS_DB_URI (the caller owns and closes
    it); `window`: what to read; `label`: the hour the run stands for, in the pipeline-state table
    (default: `window`); `safe_until`: the progress this run will record (the views' own freshness);
    `full`: re-export every fact, whatever the window (after a rebuild upstream); `fence`: the run's
    lease token, for the quarantine's MongoDB writes (PostgreSQL's are fenced by the connection the
    runner hands over); `qdrant_marker`: the vectors step's marker as read from the collection, for
    the freshness table (freshness.measure). Raises what a store raises when it is unreachable; a
    session whose rows PostgreSQL refuses is quarantined instead."""
    label = label or window
    quarantined = Quarantined("views")
    with transaction(conn):
        applied = apply_sql(conn)
    drift: dict[str, Drift] = {}
    sessions: list[str] = []
    users: set[str] = set()
    if full:  # every fact compared with MongoDB and repaired, page by page
        drift = reconcile(db, conn, repair=True, quarantined=quarantined)
        hours = ingested_hours(db)
        traffic_hours = latencies = 0
        n_examples, n_users = _count_rows(conn, FACT_EXAMPLES), _count_rows(conn, FACT_USERS)
    else:
        # Only the hours that hold records: a step's first run reads from 1970 (no progress yet), and
        # stepping through every day since then took minutes.
        span = ingested_hours(db)
        held = span is not None and span.start < window.end and window.start < span.end
        hours = whole_hours(Window(max(window.start, span.start), min(window.end, span.end))) if held and span else None
        sessions = sorted(touched_sessions(db, window))
        traffic_hours, latencies = _export_hours(db, conn, hours)
        n_examples, n_users, users = _export_entities(db, conn, sessions, quarantined)
    # Users too: a user whose row was refused ("user:<id>") leaves quarantine once its row is written.
    settle(db, quarantined, None if full else [*sessions, *(f"user:{u}" for u in users)], fence=fence)
    runs = [
        (r["step"], r["window_start"], r["window_end"], r["finished_at"], postgres.jsonb(r.get("summary") or {}))
        for r in db[RUNS].find({"_id": {"$ne": run_id("views", label)}})
    ]
    # This run too, so the dashboard's pipeline state includes the step that wrote it.
    runs.append(("views", label.start, label.end, datetime.now(UTC), postgres.jsonb({"sessions": len(sessions)})))
    # One row per (step, window_start), the latest: runs with no window that start from the same progress share a start.
    runs = list({(r[0], r[1]): r for r in sorted(runs, key=lambda r: r[3])}.values())
    in_quarantine = [
        (q["step"], q["session_id"], q["reason"], q.get("detail") or "", q["first_seen"], q["last_seen"]) for q in current(db)
    ]
    consumers = consumer_state(redis_client)
    lags = consumer_lag(redis_client)
    agreement = store_agreement(db)
    fresh = freshness.measure(
        db, redis_client, safe_until, datetime.now(UTC), since=hours.start if hours else None, qdrant_marker=qdrant_marker
    )
    with transaction(conn), conn.cursor() as cur:  # the small tables, replaced whole
        cur.execute("delete from sentencify.pipeline_runs")
        insert_rows(cur, "insert into sentencify.pipeline_runs values %s", runs)
        cur.execute("delete from sentencify.quarantine")
        insert_rows(cur, "insert into sentencify.quarantine values %s", _unique_pairs(in_quarantine))
        cur.execute("delete from sentencify.consumer_state")
        insert_rows(cur, "insert into sentencify.consumer_state values %s", consumers)
        cur.execute("delete from sentencify.consumer_partition_lag")
        insert_rows(cur, "insert into sentencify.consumer_partition_lag values %s", lags)
        cur.execute("delete from sentencify.freshness")
        insert_rows(cur, "insert into sentencify.freshness values %s", fresh)
        cur.execute("delete from sentencify.store_agreement")
        insert_rows(
            cur,
            """insert into sentencify.store_agreement (store, step, missing, extra, different, repaired, agrees,
            checked_at, agreed_at) values %s""",
            agreement,
        )
        cur.execute("delete from sentencify.ingestion_gaps")
        insert_rows(cur, "insert into sentencify.ingestion_gaps values %s", ingestion_gaps(db))
        cur.execute("delete from sentencify.erasures")  # erasure requests: hashes, times and counts only
        insert_rows(cur, "insert into sentencify.erasures values %s", [(*r[:4], postgres.jsonb(r[4])) for r in erasures.rows(db)])
    summary = {
        "window": str(window),
        "full": full,
        "hours": str(hours),
        "sql": applied,
        "sessions": len(sessions),
        "traffic_hours": traffic_hours,
        "latencies": latencies,
        "examples": n_examples,
        "users": n_users,
    }
    if quarantined:
        summary["quarantined"] = quarantined.counts()
    if drift:
        summary["drift"] = {k: d.as_dict() for k, d in drift.items()}
    log.info("views done", extra={"fields": summary})
    return summary


def _unique_pairs(rows: list[tuple]) -> list[tuple]:
    """Quarantine rows made storable, one per (step, session) as PostgreSQL stores them."""
    return list({(r[0], r[1]): r for r in (postgres.row(r) for r in rows)}.values())

"""`sentencify summary`: what the platform holds, store by store (the end of `make demo`).

Each section reads one store and says so when that store cannot be read, instead of failing
the whole summary.
"""

from __future__ import annotations

from collections.abc import Callable

from sentencify.settings import Settings

Section = tuple[str, list[tuple[str, object]]]


def mongo_sections(settings: Settings) -> list[Section]:
    from sentencify import mongo
    from sentencify.schemas import EVENT_TYPES

    client = mongo.client(settings.mongo_uri)
    try:
        db = client[settings.mongo_db]
        records = [(f"{et.code} {et.name}", db[et.name].estimated_document_count()) for et in EVENT_TYPES]
        dead = _group(db.dead_letters, "$reason")
        records.append(("dead_letters", sum(dead.values())))
        records += [(f"  reason {reason}", n) for reason, n in sorted(dead.items())]
        examples = [(f"flag {flag}", n) for flag, n in sorted(_group(db.training_examples, "$consistency_flag").items())]
        low = _group(db.training_examples, "$consistency_reasons", unwind=True)
        examples += [(f"  reason {reason}", n) for reason, n in sorted(low.items())]
        examples += [(f"rejected: {reason}", n) for reason, n in sorted(_group(db.etl_rejects, "$reason").items())]
        profiles = [("user_profile (G) documents in MongoDB", db.user_profile.estimated_document_count())]
    finally:
        client.close()
    return [("records per collection", records), ("training examples (H)", examples), ("profiles", profiles)]


def _group(collection, field: str, unwind: bool = False) -> dict:
    pipeline = ([{"$unwind": field}] if unwind else []) + [{"$group": {"_id": field, "n": {"$sum": 1}}}]
    return {d["_id"]: d["n"] for d in collection.aggregate(pipeline)}


def redis_section(settings: Settings) -> list[Section]:
    import redis

    from sentencify.steps.profiles import REDIS_KEY

    r = redis.Redis.from_url(settings.redis_url, socket_timeout=3)
    try:
        cached = sum(1 for _ in r.scan_iter(match=REDIS_KEY.format(user_id="*"), count=1000))
    finally:
        r.close()
    return [("profile cache", [("user_profile:{id} keys in Redis", cached)])]


def qdrant_section(settings: Settings) -> list[Section]:
    from sentencify import vectorstore

    qc = vectorstore.client(settings)
    try:
        name = settings.qdrant_collection
        real = vectorstore.counts_by_category(qc, name, "real")
        synthetic = vectorstore.counts_by_category(qc, name, "synthetic")
    finally:
        qc.close()
    rows: list[tuple[str, object]] = [
        (f"{c}  (real / synthetic)", f"{real.get(c, 0)} / {synthetic.get(c, 0)}") for c in sorted(set(real) | set(synthetic))
    ]
    rows.append(("all  (real / synthetic)", f"{sum(real.values())} / {sum(synthetic.values())}"))
    return [(f"Qdrant {settings.qdrant_collection} points per category", rows)]


def views_section(settings: Settings) -> list[Section]:
    import psycopg2

    conn = psycopg2.connect(settings.analytics_db_uri, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("select table_name from information_schema.views where table_schema = 'sentencify' order by 1")
            rows = []
            for (view,) in cur.fetchall():
                cur.execute(f"select count(*) from sentencify.{view}")  # names come from the catalogue
                rows.append((view, cur.fetchone()[0]))
    finally:
        conn.close()
    return [("dashboard views (rows)", rows)]


READERS: list[tuple[str, Callable[[Settings], list[Section]]]] = [
    ("MongoDB", mongo_sections),
    ("Redis", redis_section),
    ("Qdrant", qdrant_section),
    ("PostgreSQL views", views_section),
]


def collect(settings: Settings) -> list[Section]:
    sections: list[Section] = []
    for store, read in READERS:
        try:
            sections += read(settings)
        except Exception as exc:  # noqa: BLE001 (one store down must not hide the others)
            sections.append((store, [(f"not readable: {str(exc).splitlines()[0][:150]}", "")]))
    return sections


def render(sections: list[Section]) -> str:
    lines = []
    for title, rows in sections:
        lines.append(title)
        for label, value in rows:
            lines.append(f"  {label:<48} {value:>12}" if value != "" else f"  {label}")
    return "\n".join(lines)

"""Strict readers of every store after MongoDB, for the chain's store-limit tests.

Each reads what a consumer of that store reads, the strictest way: every PostgreSQL view through
psycopg2 (it refuses timestamps outside years 1..9999 and hands back NaN/inf as floats, checked
here), every Redis profile through orjson (RFC 8259: no NaN, no Infinity, no lone surrogate), and
every Qdrant vector as float32 (finite, within float32's range).
"""

from __future__ import annotations

import math

import orjson
import psycopg2

from sentencify import vectorstore

FLOAT32_MAX = 3.4028234663852886e38


def _finite_everywhere(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite_everywhere(v) for v in value)
    return True


def postgres_views(settings) -> dict[str, list[tuple]]:
    """Every row of every view of the `sentencify` schema; asserts every float is finite."""
    conn = psycopg2.connect(settings.analytics_db_uri)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select table_name from information_schema.views where table_schema = 'sentencify' order by 1")
            views = [r[0] for r in cur.fetchall()]
            out = {}
            for view in views:
                cur.execute(f"select * from sentencify.{view}")
                out[view] = cur.fetchall()
                assert _finite_everywhere(out[view]), (view, out[view])
        return out
    finally:
        conn.close()


def postgres_rows(settings, sql: str) -> list[tuple]:
    conn = psycopg2.connect(settings.analytics_db_uri)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def redis_profiles(redis) -> dict[str, dict]:
    """Every `user_profile:*` value, parsed by orjson (strict JSON)."""
    out = {}
    for key in redis.scan_iter(match="user_profile:*", count=1000):
        out[key.decode("utf-8", "surrogateescape")] = orjson.loads(redis.get(key))
    return out


def qdrant_points(settings) -> dict[str, tuple[dict, list[float]]]:
    """Every point (id -> payload, vector); asserts each vector is finite float32 and each payload strict JSON."""
    qc = vectorstore.client(settings)
    try:
        out, offset = {}, None
        if not qc.collection_exists(settings.qdrant_collection):
            return out
        while True:
            points, offset = qc.scroll(settings.qdrant_collection, limit=1000, offset=offset, with_vectors=True)
            for p in points:
                assert all(math.isfinite(x) and abs(x) <= FLOAT32_MAX for x in p.vector), p.id
                orjson.loads(orjson.dumps(p.payload))
                out[str(p.id)] = (p.payload, list(p.vector))
            if offset is None:
                return out
    finally:
        qc.close()

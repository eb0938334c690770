"""`sentencify rebuild` after a threshold change: every store and every view agrees with the rebuilt examples."""

from __future__ import annotations

import dataclasses
import json

import psycopg2
import redis as redis_lib

from sentencify import vectorstore
from sentencify.cli import main
from sentencify.steps.runner import run_step
from tests.chain_data import Logs, at, hour


def test_a_threshold_change_then_rebuild_makes_mongodb_qdrant_redis_and_every_view_agree(
    settings, mongo, analytics_uri, tmp_path, monkeypatch, capsys
):
    s = dataclasses.replace(settings, qdrant_path=str(tmp_path / "qdrant"), etl_time_gap_s=5.0, analytics_db_uri=analytics_uri)
    logs = Logs(mongo)
    for i in range(3):
        logs.full_session(10, f"ok{i}", a={"user_id": f"user{i}"}, b={"user_id": f"user{i}"}, c={"user_id": f"user{i}"})
    for i in range(2):  # B 8 s after A: `time_gap` at 5 s, fine at 10 s
        logs.full_session(10, f"gap{i}", b={"created_at": at(10, 0, 8)})
    for step in ("etl", "profile", "vectors", "views"):
        run_step(step, hour(10), s)
    assert mongo.training_examples.count_documents({"consistency_flag": "low"}) == 2

    rebuilt = dataclasses.replace(s, etl_time_gap_s=10.0)
    for key, value in rebuilt.to_env().items():
        monkeypatch.setenv(key, value)
    assert main(["rebuild"]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("[") and "done in" in line] == [
        "[1/4] etl",
        "[2/4] profile",
        "[3/4] vectors",
        "[4/4] views",
    ], out

    examples = {d["_id"]: d for d in mongo.training_examples.find()}
    high = {k for k, d in examples.items() if d["consistency_flag"] == "high"}
    assert high == {"ok0", "ok1", "ok2", "gap0", "gap1"}  # the new threshold, everywhere below

    qc = vectorstore.client(s)
    try:
        points, _ = qc.scroll(s.qdrant_collection, scroll_filter=vectorstore.source_filter("real"), limit=100, with_payload=True)
    finally:
        qc.close()
    assert {p.payload["example_id"] for p in points} == high
    assert {str(p.id) for p in points} == {vectorstore.point_id(e) for e in high}

    r = redis_lib.Redis.from_url(s.redis_url)
    try:
        for profile in mongo.user_profile.find():
            cached = json.loads(r.get(f"user_profile:{profile['_id']}"))
            assert cached["paraphrase_execution_count"] == profile["paraphrase_execution_count"]
            assert cached["recommend_accept_rate"] == profile["recommend_accept_rate"]
    finally:
        r.close()

    with psycopg2.connect(s.analytics_db_uri) as conn, conn.cursor() as cur:
        cur.execute("select example_id, consistency_flag from sentencify.fact_examples")
        assert dict(cur.fetchall()) == {k: d["consistency_flag"] for k, d in examples.items()}
        cur.execute("select coalesce(sum(golden_examples), 0) from sentencify.v_golden_data")
        golden = cur.fetchone()[0]
        cur.execute("select reason, sum(examples) from sentencify.v_quality group by reason")
        quality = dict(cur.fetchall())
        cur.execute("select sessions from sentencify.v_funnel order by step_order")
        funnel = [n for (n,) in cur.fetchall()]
    assert golden == len(high)
    assert "time_gap" not in quality and quality.get("none") == len(high)
    assert funnel[0] == len(examples)

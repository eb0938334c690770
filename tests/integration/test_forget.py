"""`sentencify forget`: a user erased from every store while an hourly run is in flight, and kept
erased through late records, a consumer group re-reading from the start, a replay of every dead
letter and a full rebuild; the other users' data unchanged; an erasure killed -9 half-way completes
on the next call (pipeline.md, "Personal data: erasure and suppression")."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg2
from bson import Binary

from sentencify import vectorstore
from sentencify.cli import main
from sentencify.erasure.keys import erasure_key, user_hash
from sentencify.produce import producer
from sentencify.steps.lease import LeaseLost
from sentencify.steps.runner import STEPS, run_step
from tests.chain_data import Logs
from tests.helpers import ROOT, consume_until_idle

VICTIM = "victim-7f3a9c"
OTHERS = ("other-1", VICTIM + "x")  # the second id contains the victim's: it must be left alone
SECRET = "SECRET-8d1e"  # in every text the victim typed
DIM = 384


def _session_records(user: str, tag: str, i: int, doc: str, *, anonymous_d: bool = False, anonymous_e: bool = False):
    """(topic suffix, key, record) of one full session of `user`: E, A, B, C, D, I."""
    s, t = f"sess-{tag}-{i}", f"2026-11-01T10:{10 + i:02d}:00Z"
    text = f"{SECRET} " if user == VICTIM else "public "
    e = {
        "context_hash": f"h-{tag}-{i}",
        "doc_id": doc,
        "created_at": t,
        "selected_text": text + f"selected {i}",
        "context_full": text + f"whole context {i}",
        "embedding_v1": [0.1 + 0.01 * i + (0.3 if user == VICTIM else 0.0)] * DIM,
        "embedding_version": "v1",
    }
    if not anonymous_e:
        e["user_id"] = user
    d = {
        "correction_history_id": f"d-{tag}-{i}",
        "created_at": t,
        "field": "email",
        "intensity": "moderate",
        "user_prompt": text + "make it polite",
        "input_sentence": text + "input sentence",
        "output_sentences": [text + "output one", text + "output two"],
        "selected_index": 1,
    }
    if not anonymous_d:
        d["user"] = user
    return [
        ("context_block", e["context_hash"], e),
        (
            "editor_recommend_options",
            f"a-{tag}-{i}",
            {
                "insert_id": f"a-{tag}-{i}",
                "recommend_session_id": s,
                "doc_id": doc,
                "context_hash": e["context_hash"],
                "created_at": t,
                "user_id": user,
                "reco_category_input": "email",
                "reco_options": [{"category": "email", "strength": "moderate", "score": 0.7}],
            },
        ),
        (
            "editor_run_paraphrasing",
            f"b-{tag}-{i}",
            {
                "insert_id": f"b-{tag}-{i}",
                "recommend_session_id": s,
                "source_recommend_event_id": f"a-{tag}-{i}",
                "created_at": t.replace(":00Z", ":02Z"),
                "user_id": user,
                "doc_id": doc,
                "target_category": "email",
                "target_intensity": "moderate",
                "target_language": "ko",
            },
        ),
        (
            "editor_selected_paraphrasing",
            f"c-{tag}-{i}",
            {
                "insert_id": f"c-{tag}-{i}",
                "recommend_session_id": s,
                "source_recommend_event_id": f"a-{tag}-{i}",
                "was_accepted": True,
                "created_at": t.replace(":00Z", ":10Z"),
                "user_id": user,
                "selected_option_index": 1,
                "correction_history_id": d["correction_history_id"],
            },
        ),
        ("correction_history", d["correction_history_id"], d),
        (
            "recommend_log",
            f"i-{tag}-{i}",
            {"insert_id": f"i-{tag}-{i}", "recommend_session_id": s, "created_at": t, "latency_ms": 40.0 + i, "user_id": user},
        ),
    ]


def _everyone():
    recs = []
    # The victim: a D reached only through their C, an E only through their A; a document only they name.
    recs += _session_records(VICTIM, "v", 0, "doc-victim", anonymous_d=True, anonymous_e=True)
    recs += _session_records(VICTIM, "v", 1, "doc-victim")
    recs += _session_records(VICTIM, "v", 2, "doc-shared")
    recs += _session_records(OTHERS[0], "o", 0, "doc-shared")
    recs += _session_records(OTHERS[0], "o", 1, "doc-other")
    recs += _session_records(OTHERS[1], "x", 0, "doc-other")
    recs += _session_records(OTHERS[1], "x", 1, "doc-other")
    for doc, topic in (("doc-victim", f"{SECRET} macro topic"), ("doc-shared", "shared topic"), ("doc-other", "other topic")):
        f = {"insert_id": f"f-{doc}", "doc_id": doc, "last_updated": "2026-11-01T09:00:00Z", "macro_topic": topic}
        recs.append(("document_context_cache", f["insert_id"], {**f, "macro_category_hint": "email"}))
    return recs


def _bad_records():
    """Dead letters: the victim's (a B missing a field; bytes that are not JSON, keyed by the id) and another user's."""
    return [
        ("editor_run_paraphrasing", b"bad-v", json.dumps({"insert_id": "bad-v", "user_id": VICTIM, "note": SECRET}).encode()),
        ("editor_recommend_options", VICTIM.encode(), f"not json {SECRET}".encode()),
        ("editor_selected_paraphrasing", b"bad-o", json.dumps({"insert_id": "bad-o", "user_id": OTHERS[0]}).encode()),
    ]


def _send(settings, records) -> None:
    kafka = producer(settings)
    try:
        for suffix, key, value in records:
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            kafka.send(settings.topic_prefix + suffix, key=key if isinstance(key, bytes) else key.encode(), value=raw)
        kafka.flush(30)
    finally:
        kafka.close()


# -- what the stores hold ---------------------------------------------------------------------------

_ID = re.compile(r"(?<![\w.-])" + re.escape(VICTIM) + r"(?![\w.-])")
_VICTIM_SESSIONS = [f"sess-v-{i}" for i in range(3)]


def _leaks(text: str) -> bool:
    return bool(_ID.search(text)) or SECRET in text or any(s in text for s in _VICTIM_SESSIONS)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes | Binary):
        yield bytes(value).decode("utf-8", "replace")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _mongo_leaks(db) -> list[str]:
    return [
        f"{name}/{doc['_id']}"
        for name in db.list_collection_names()
        for doc in db[name].find()
        if any(_leaks(s) for s in _strings(doc))
    ]


def _redis_leaks(r) -> list[str]:
    out = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        value = r.get(key) if kind == "string" else r.hgetall(key) if kind == "hash" else b""
        if any(_leaks(s) for s in _strings([key, value])):
            out.append(key.decode("utf-8", "replace"))
    return out


def _qdrant(settings) -> dict[str, dict]:
    qc = vectorstore.client(settings)
    try:
        out, offset = {}, None
        while qc.collection_exists(settings.qdrant_collection):
            points, offset = qc.scroll(settings.qdrant_collection, limit=1000, offset=offset, with_vectors=True)
            out.update({str(p.id): {"payload": p.payload, "vector": [round(x, 5) for x in p.vector]} for p in points})
            if offset is None:
                break
        return out
    finally:
        qc.close()


def _pg_tables(uri: str) -> dict[str, list[str]]:
    conn = psycopg2.connect(uri)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select table_name from information_schema.tables where table_schema = 'sentencify' order by 1")
            tables = [r[0] for r in cur.fetchall()]
            out = {}
            for t in tables:
                cur.execute(f"select t::text from sentencify.{t} t")
                out[t] = sorted(r[0] for r in cur.fetchall())
            return out
    finally:
        conn.close()


def assert_nothing_of_the_victim(s, mongo, r) -> None:
    assert _mongo_leaks(mongo) == []
    assert _redis_leaks(r) == []
    assert [p for p, v in _qdrant(s).items() if any(_leaks(x) for x in _strings(v["payload"]))] == []
    assert {t: [row for row in rows if _leaks(row)] for t, rows in _pg_tables(s.analytics_db_uri).items()} == {
        t: [] for t in _pg_tables(s.analytics_db_uri)
    }


def others_snapshot(s, mongo, r) -> dict:
    """The other users' examples, profiles (MongoDB and Redis), points and rows, without the times a recomputation stamps."""
    drop = ("processed_at", "updated_at")
    mine = {"user_id": {"$in": list(OTHERS)}}
    examples = {d["_id"]: {k: v for k, v in d.items() if k not in drop} for d in mongo.training_examples.find(mine)}
    profiles = {d["_id"]: {k: v for k, v in d.items() if k not in drop} for d in mongo.user_profile.find(mine)}
    redis_profiles = {u: {k: v for k, v in json.loads(r.get(f"user_profile:{u}")).items() if k not in drop} for u in OTHERS}
    pg = _pg_tables(s.analytics_db_uri)
    return {
        "examples": examples,
        "profiles": profiles,
        "redis": redis_profiles,
        "points": {p: v for p, v in _qdrant(s).items() if v["payload"].get("user_id") in OTHERS},
        "rows": {t: [row for row in pg[t] if not _leaks(row)] for t in ("fact_examples", "fact_sessions", "fact_users")},
    }


def _env(s) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA", "MONGO", "REDIS", "QDRANT"))}, **s.to_env()}


def _chain(s, full: bool = False) -> None:
    for step in STEPS:
        run_step(step, None, s, full=full)


def test_a_user_erased_while_a_run_is_in_flight_stays_erased_everywhere(
    settings, mongo, redis, analytics_uri, tmp_path, monkeypatch
):
    s = dataclasses.replace(
        settings, qdrant_path=str(tmp_path / "qdrant"), analytics_db_uri=analytics_uri, vector_real_threshold=1
    )
    for key, value in s.to_env().items():
        monkeypatch.setenv(key, value)
    _send(s, _everyone() + _bad_records())
    consume_until_idle(s)
    assert mongo.dead_letters.count_documents({}) == 3
    run_step("etl", None, s)
    run_step("profile", None, s)
    run_step("vectors", None, s)
    # Quarantine entries of the victim's session and of the user (a real quarantine is hard to cause here).
    now = datetime.now(UTC)
    for q in (("etl", "sess-v-1"), ("profile", f"user:{VICTIM}"), ("etl", "sess-o-1")):
        mongo.pipeline_quarantine.insert_one(
            {
                "_id": f"{q[0]}:{q[1]}",
                "step": q[0],
                "session_id": q[1],
                "reason": "test",
                "detail": "-",
                "first_seen": now,
                "last_seen": now,
            }
        )
    run_step("views", None, s)
    # Everything of the victim is there to be erased, in every store.
    assert mongo.training_examples.count_documents({"user_id": VICTIM}) == 3
    assert r_get(redis, VICTIM) is not None
    assert _mongo_leaks(mongo) and _redis_leaks(redis)
    assert any(v["payload"].get("user_id") == VICTIM for v in _qdrant(s).values())
    assert any(_leaks(row) for rows in _pg_tables(analytics_uri).values() for row in rows)
    before = others_snapshot(s, mongo, redis)

    # An hourly run in flight: the profile step has read the victim's records and waits to publish.
    from sentencify.steps import profiles

    reached, go = threading.Event(), threading.Event()
    real_build = profiles.build_profile

    def held_build(user_id, rec, now):
        if user_id == VICTIM:
            reached.set()
            go.wait(60)
        return real_build(user_id, rec, now)

    monkeypatch.setattr(profiles, "build_profile", held_build)
    outcome: dict = {}

    def in_flight():
        try:
            outcome["summary"] = run_step("profile", None, s, full=True)
        except BaseException as exc:  # noqa: BLE001 (inspected below)
            outcome["error"] = exc

    runner = threading.Thread(target=in_flight, daemon=True)
    runner.start()
    assert reached.wait(60)

    assert main(["forget", "--user", VICTIM]) == 0
    go.set()
    runner.join(60)
    assert isinstance(outcome.get("error"), LeaseLost), outcome  # fenced out: it published nothing more
    monkeypatch.setattr(profiles, "build_profile", real_build)

    assert_nothing_of_the_victim(s, mongo, redis)
    h = user_hash(erasure_key(s), VICTIM)
    request = mongo.erasure_requests.find_one({"_id": h})
    assert request["status"] == "done" and request["finished_at"] >= request["requested_at"]
    removed = request["removed"]
    for store in ("editor_recommend_options", "editor_run_paraphrasing", "editor_selected_paraphrasing", "recommend_log"):
        assert removed[store] == 3, (store, removed)
    assert removed["correction_history"] == 3 and removed["context_block"] == 3  # the anonymous D and E too
    assert removed["document_context_cache"] == 1  # doc-victim's F; doc-shared's stays
    assert removed["dead_letters"] == 2 and removed["training_examples"] == 3 and removed["user_profile"] == 1
    assert removed["redis"] == 1 and removed["qdrant"] == 3 and removed["postgres:fact_users"] == 1
    assert removed["pipeline_quarantine"] == 2 and removed["postgres:quarantine"] == 2
    assert mongo.document_context_cache.count_documents({}) == 2
    assert mongo.erasure_suppressions.find_one({"_id": h})["kind"] == "user"

    # The dashboard's hourly facts equal what the remaining records imply (a full export agrees).
    facts = ("fact_traffic", "fact_categories", "fact_latency", "fact_dead_letters")
    after_forget = {t: _pg_tables(analytics_uri)[t] for t in facts}
    run_step("views", None, s, full=True)
    assert {t: _pg_tables(analytics_uri)[t] for t in facts} == after_forget

    # Late records of the victim (new ones, redelivered ones, D and E without a user field) ...
    late = list(_session_records(VICTIM, "late", 0, "doc-victim"))
    late += [
        (
            "correction_history",
            "d-v-0",
            {"correction_history_id": "d-v-0", "created_at": "2026-11-01T11:00:00Z", "user_prompt": SECRET},
        ),
        (
            "context_block",
            "h-v-0",
            {"context_hash": "h-v-0", "doc_id": "doc-x", "created_at": "2026-11-01T11:00:00Z", "selected_text": SECRET},
        ),
        ("editor_run_paraphrasing", b"bad-late", json.dumps({"insert_id": "bad-late", "user_id": VICTIM}).encode()),
    ]
    _send(s, late)
    service = consume_until_idle(s)
    assert service._summary()["suppressed"] == len(late)
    # ... a consumer group that reads every topic again from the earliest offset ...
    regroup = consume_until_idle(dataclasses.replace(s, consumer_group=f"regroup-{uuid.uuid4().hex[:6]}"))
    # 3 sessions x 6, doc-victim's F, 2 bad records, the late ones
    assert regroup._summary()["suppressed"] == 18 + 1 + 2 + len(late)
    # ... every dead letter replayed (one restored from an old backup included) ...
    mongo.dead_letters.insert_one(
        {
            "_id": "restored-from-backup",
            "topic": s.topic_prefix + "editor_recommend_options",
            "partition": 0,
            "offset": 0,
            "key": None,
            "raw": Binary(json.dumps(_session_records(VICTIM, "old", 0, "doc-victim")[1][2]).encode()),
            "reason": "conflict",
            "error": "-",
            "failed_at": now,
            "ingested_at": now,
        }
    )
    assert main(["replay-dead-letters"]) == 0
    assert mongo.dead_letters.find_one({"_id": "restored-from-backup"}).get("replayed_at") is None
    mongo.dead_letters.delete_one({"_id": "restored-from-backup"})
    consume_until_idle(s)
    # ... and a full rebuild of every step: still nothing of the victim anywhere.
    assert main(["rebuild"]) == 0
    assert_nothing_of_the_victim(s, mongo, redis)
    after = others_snapshot(s, mongo, redis)
    assert after == before


def r_get(r, user: str):
    return r.get(f"user_profile:{user}")


def test_an_erasure_killed_half_way_completes_on_the_next_call(settings, mongo, redis, analytics_uri, tmp_path):
    s = dataclasses.replace(settings, qdrant_path=str(tmp_path / "qdrant"), analytics_db_uri=analytics_uri)
    logs = Logs(mongo)
    # Enough records that the erasure is still working when it is killed after its first store.
    for i in range(400):
        logs.full_session(10, f"v{i}", a={"user_id": VICTIM}, b={"user_id": VICTIM}, c={"user_id": VICTIM}, d={"user": VICTIM})
    for i in range(20):
        logs.full_session(
            10, f"o{i}", a={"user_id": OTHERS[0]}, b={"user_id": OTHERS[0]}, c={"user_id": OTHERS[0]}, d={"user": OTHERS[0]}
        )
    began = time.monotonic()
    _chain(s)
    print(f"chain {time.monotonic() - began:.1f} s")
    others = _others_counts(mongo)
    env = {**_env(s), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentencify.cli", "forget", "--user", VICTIM],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "removed" in line:  # the first store is done
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    h = user_hash(erasure_key(s), VICTIM)
    assert mongo.erasure_requests.find_one({"_id": h})["status"] == "running"
    assert mongo.editor_recommend_options.count_documents({"user_id": VICTIM}) == 400  # half-done: raw records remain

    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sentencify.cli", "forget", "--user", VICTIM],
        env=env,
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"second forget {time.monotonic() - began:.1f} s", done.stdout)
    assert VICTIM not in done.stdout + done.stderr  # shown by its hash only
    request = mongo.erasure_requests.find_one({"_id": h})
    assert request["status"] == "done" and request["attempts"] == 2
    assert request["removed"]["editor_recommend_options"] == 400
    assert request["removed"]["training_examples"] >= 1  # counted across both calls
    for c in (
        "editor_recommend_options",
        "editor_run_paraphrasing",
        "editor_selected_paraphrasing",
        "context_block",
        "correction_history",
    ):
        assert mongo[c].count_documents({"_id": {"$regex": "v[0-9]+$"}}) == 0, c
    assert mongo.training_examples.count_documents({"user_id": VICTIM}) == 0
    assert mongo.user_profile.find_one({"_id": VICTIM}) is None and redis.get(f"user_profile:{VICTIM}") is None
    assert _others_counts(mongo) == others
    assert mongo.pipeline_leases.count_documents({"holder": {"$ne": None}}) == 0  # every lease released


def _others_counts(mongo) -> dict[str, int]:
    """The other user's documents per collection (ids ending in o<N>)."""
    counts = {c: mongo[c].count_documents({"_id": {"$regex": "o[0-9]+$"}}) for c in mongo.list_collection_names()}
    return {c: n for c, n in counts.items() if n}


def test_a_missing_erasure_key_is_one_line(settings, tmp_path):
    env = {**_env(dataclasses.replace(settings, stack_dir=tmp_path / "no-stack")), "PYTHONPATH": str(ROOT)}
    env.pop("ERASURE_KEY", None)
    out = subprocess.run(
        [sys.executable, "-m", "sentencify.cli", "forget", "--user", VICTIM],
        env=env,
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "ERASURE_KEY is not set" in out.stderr and "Traceback" not in out.stderr

"""docs/operations.md's runbooks, run as written: the real `sentencify` commands against the real
broker and MongoDB. What replay can recover (a platform rule or setting fixed since) and what it
cannot (bytes a producer sent wrong: not sent with --only-storable, else dead-lettered again), and the way
back for the latter (the producer re-sends)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess

from sentencify.settings import Settings
from tests.factories import record
from tests.helpers import ROOT, consume_until_idle, send_raw

SENTENCIFY = ROOT / ".venv" / "bin" / "sentencify"


def cli(settings: Settings, *args: str) -> str:
    """`sentencify ARGS` with these settings in its environment; its output (it must succeed)."""
    out = subprocess.run(
        [str(SENTENCIFY), *args],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_replay_recovers_records_a_platform_setting_refused_once_it_is_fixed(settings, mongo):
    """EMBEDDING_DIM was wrong (8, while producers send 384): the E records are dead-lettered.
    After the fix, summary -> dry run -> replay stores each once, and the dead letters are marked."""
    contexts = [record("E") for _ in range(3)]
    send_raw(settings, "context_block", [json.dumps(e).encode() for e in contexts], key=b"doc-1")
    consume_until_idle(dataclasses.replace(settings, embedding_dim=8))
    assert mongo.context_block.count_documents({}) == 0
    assert mongo.dead_letters.count_documents({"reason": "schema"}) == 3

    assert "schema" in cli(settings, "summary")
    assert "would replay 3 dead letters" in cli(settings, "replay-dead-letters", "--reason", "schema", "--dry-run")
    assert mongo.dead_letters.count_documents({"replayed_at": {"$exists": True}}) == 0  # a dry run sends nothing
    assert "replayed 3 dead letters" in cli(settings, "replay-dead-letters", "--reason", "schema")
    consume_until_idle(settings)  # EMBEDDING_DIM fixed (384)

    assert {d["_id"] for d in mongo.context_block.find()} == {e["context_hash"] for e in contexts}
    assert mongo.dead_letters.count_documents({}) == 3, "nothing failed again"
    assert mongo.dead_letters.count_documents({"replayed_at": {"$exists": True}}) == 3
    assert "would replay 0 dead letters" in cli(settings, "replay-dead-letters", "--reason", "schema", "--dry-run")


def test_replay_cannot_repair_bytes_a_producer_sent_wrong_and_the_producers_resend_recovers_them(settings, mongo):
    """docs/operations.md: replay re-checks each letter and says what would fail again; `--only-storable`
    does not send it, a plain replay sends it (events.md) and it only becomes one more dead
    letter. The fixed producer re-sending the event stores it once, however often it is sent."""
    bad = record("A")
    del bad["created_at"]  # the producer bug: a required field missing
    topic = settings.topic_prefix + "editor_recommend_options"
    send_raw(settings, "editor_recommend_options", [json.dumps(bad).encode()], key=b"s-1")
    consume_until_idle(settings)
    assert mongo.editor_recommend_options.count_documents({}) == 0
    assert mongo.dead_letters.count_documents({}) == 1

    out = cli(settings, "replay-dead-letters", "--topic", topic, "--only-storable")
    assert "replayed 0 dead letters" in out and "1 would fail again" in out and "--only-storable" in out
    assert mongo.dead_letters.count_documents({"replayed_at": {"$exists": True}}) == 0, "left unmarked"

    assert "replayed 1 dead letters" in cli(settings, "replay-dead-letters", "--topic", topic)
    consume_until_idle(settings)
    assert mongo.editor_recommend_options.count_documents({}) == 0, "replay stored bytes that are still wrong"
    letters = list(mongo.dead_letters.find().sort("offset", 1))
    assert [d["reason"] for d in letters] == ["schema", "schema"]
    assert letters[0].get("replayed_at") and not letters[1].get("replayed_at")
    assert bytes(letters[0]["raw"]) == bytes(letters[1]["raw"]), "the same bytes, dead-lettered again"

    fixed = {**bad, "created_at": "2026-11-01T10:00:00Z"}  # the runbook: the fixed producer re-sends
    send_raw(settings, "editor_recommend_options", [json.dumps(fixed).encode()] * 2, key=b"s-1")
    consume_until_idle(settings)
    assert [d["_id"] for d in mongo.editor_recommend_options.find()] == [bad["insert_id"]]
    assert mongo.dead_letters.count_documents({}) == 2

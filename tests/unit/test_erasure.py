"""Erasure's pure parts: the keyed hash, which fields of a record name its person, how a dead letter
is matched to an id, and how hours are grouped (pipeline.md, "Personal data: erasure and suppression")."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentencify.erasure import keys
from sentencify.erasure.forget import letter_matches, needles, runs_of_hours
from sentencify.erasure.suppression import identities, raw_identities
from sentencify.settings import Settings

KEY = b"k" * 32
ids = st.text(min_size=1, max_size=40)


@given(ids)
def test_the_user_hash_is_hmac_sha256_of_the_id_under_the_key(user_id):
    expected = hmac.new(KEY, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    assert keys.user_hash(KEY, user_id) == expected
    assert len(expected) == 64


@given(ids, st.sampled_from([keys.CONTEXT_HASH, keys.CORRECTION, keys.DOC]))
def test_key_hashes_never_equal_the_user_hash_of_the_same_text(value, kind):
    assert keys.digest(KEY, value, kind) != keys.user_hash(KEY, value)


@given(ids)
def test_another_key_gives_another_hash(user_id):
    assert keys.user_hash(KEY, user_id) != keys.user_hash(b"other key", user_id)


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind"):
        keys.digest(KEY, "x", "email")


def test_the_key_comes_from_erasure_key_or_the_local_stack_and_is_never_shown(tmp_path):
    assert keys.erasure_key(Settings.from_env({"ERASURE_KEY": "s3cret", "STACK_DIR": str(tmp_path)})) == b"s3cret"
    assert "s3cret" not in repr(Settings.from_env({"ERASURE_KEY": "s3cret"}))
    settings = Settings.from_env({"STACK_DIR": str(tmp_path)})
    with pytest.raises(keys.ErasureKeyMissing) as missing:
        keys.erasure_key(settings)
    assert "\n" not in str(missing.value) and "ERASURE_KEY is not set" in str(missing.value)
    assert keys.erasure_key_or_none(settings) is None
    (tmp_path / keys.KEY_FILE).write_text(keys.generate() + "\n")  # what `stack up` writes (mode 600)
    assert len(keys.erasure_key(settings)) == 64


@pytest.mark.parametrize(
    ("collection", "record", "expected"),
    [
        ("editor_recommend_options", {"user_id": "u", "context_hash": "h"}, [("user", "u")]),
        ("editor_run_paraphrasing", {"user_id": "u"}, [("user", "u")]),
        ("editor_selected_paraphrasing", {"user_id": "u", "correction_history_id": "d"}, [("user", "u")]),
        ("recommend_log", {"user_id": "u"}, [("user", "u")]),
        ("correction_history", {"user": "u", "correction_history_id": "d"}, [("user", "u"), ("correction_history_id", "d")]),
        ("correction_history", {"correction_history_id": "d"}, [("correction_history_id", "d")]),
        ("context_block", {"user_id": "u", "context_hash": "h"}, [("user", "u"), ("context_hash", "h")]),
        ("context_block", {"context_hash": "h", "user": "not-E's-field"}, [("context_hash", "h")]),
        ("document_context_cache", {"doc_id": "doc", "user_id": "u"}, [("doc_id", "doc")]),
        ("editor_recommend_options", {"user_id": None}, []),
        ("editor_recommend_options", {"user_id": 7}, []),  # only strings name a user
        ("correction_history", {"user_id": "u"}, []),  # D names its user `user`
        (None, {"user": "u", "user_id": "v", "context_hash": "h"}, [("user", "v"), ("user", "u"), ("context_hash", "h")]),
    ],
)
def test_which_fields_of_a_record_name_its_person(collection, record, expected):
    assert identities(collection, record) == expected


def test_a_dead_letters_identities_come_from_its_json_and_its_key():
    raw = json.dumps({"insert_id": "x", "user_id": "u"}).encode()
    assert raw_identities("editor_run_paraphrasing", raw) == [("user", "u")]
    assert raw_identities("editor_run_paraphrasing", b"not json", b"u") == [("user", "u")]
    assert raw_identities("editor_run_paraphrasing", b"[1, 2]") == []
    assert raw_identities("editor_run_paraphrasing", None, b"\xff") == []


# User ids as services mint them: letters (any script), digits, `-`, `_` and `.`, starting with a letter or digit.
user_ids = st.from_regex(r"[A-Za-z0-9\u00c0-\u024f\uac00-\ud7a3][A-Za-z0-9_.\-\u00c0-\u024f\uac00-\ud7a3]{0,19}", fullmatch=True)


@given(user_ids)
def test_a_dead_letter_naming_the_id_matches_and_one_naming_a_longer_id_does_not(user_id):
    patterns = needles(user_id)
    letter = {"topic": "p.editor_run_paraphrasing", "raw": json.dumps({"note": user_id}).encode(), "key": None}
    assert letter_matches(letter, patterns, set())
    escaped = {"topic": "p.x", "raw": json.dumps({"note": user_id}, ensure_ascii=True).encode(), "key": None}
    assert letter_matches(escaped, patterns, set())
    longer = {"topic": "p.x", "raw": json.dumps({"note": user_id + "0x"}).encode(), "key": None}
    assert not letter_matches(longer, patterns, set()) or (user_id + "0x").count(user_id) > 1


def test_a_dead_letter_matches_by_an_erased_key_without_naming_the_user():
    letter = {"topic": "p.context_block", "raw": json.dumps({"context_hash": "h1", "doc_id": "d"}).encode(), "key": b"h1"}
    assert letter_matches(letter, needles("u1"), {("context_hash", "h1")})
    assert not letter_matches(letter, needles("u1"), {("context_hash", "h2")})
    assert letter_matches({"topic": "p.x", "raw": b"garbage", "key": b"u1"}, needles("u1"), set())
    assert not letter_matches({"topic": "p.x", "raw": b"u10 garbage", "key": b"u10"}, needles("u1"), set())


@given(st.sets(st.integers(0, 200), max_size=60), st.integers(1, 30))
def test_hours_group_into_windows_of_consecutive_hours_each_covered_once(offsets, most):
    base = datetime(2026, 11, 1, tzinfo=UTC)
    hours = [base + timedelta(hours=o) for o in offsets]
    windows = runs_of_hours(hours, most)
    covered = [w.start + timedelta(hours=i) for w in windows for i in range(int((w.end - w.start) / timedelta(hours=1)))]
    assert covered == sorted(hours)
    assert all(w.end - w.start <= timedelta(hours=most) for w in windows)

"""Unit tests (no services): dead letters and the broken-producer alarm."""

from __future__ import annotations

from datetime import UTC, datetime

from consumer.dead_letter import BadRatioAlarm, dead_letter_doc, letter_id
from consumer.records import BadRecord, Position

POS = Position("p.recommend_log", 0, 7)


def test_dead_letter_keeps_raw_bytes_and_truncates_only_oversized():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    small = dead_letter_doc(POS, b"k", b"{bad", BadRecord("not_json", "x"), 4, now)
    assert bytes(small["raw"]) == b"{bad" and not small["truncated"] and small["_id"].startswith("p.recommend_log:0:7:-:")
    big = dead_letter_doc(POS, None, b"y" * 100, BadRecord("too_large", "x"), 4, now)
    assert bytes(big["raw"]) == b"yyyy" and big["truncated"] and big["raw_size"] == 100 and big["key"] is None


def test_alarm_judges_only_a_full_window_and_clears():
    g = BadRatioAlarm(window=4, max_ratio=0.5)
    tp = ("t", 0)
    assert [g.observe(tp, True) for _ in range(3)] == [None, None, None]  # 3 of 3 bad, window not full
    assert g.observe(tp, True) is True and tp in g.alarms
    assert "4 of the last 4" in g.describe(tp)
    assert [g.observe(tp, False) for _ in range(2)] == [None, False]  # 2 of 4: at the limit, not over it
    assert tp not in g.alarms


def test_alarm_slides_without_raising():
    g = BadRatioAlarm(window=4, max_ratio=0.5)
    tp = ("t", 0)
    for bad in (True, False, False, True, False, True, False, True, False):
        assert g.observe(tp, bad) is None  # never more than 2 of the last 4


def test_a_letter_id_is_stable_for_one_record_and_new_for_a_new_record_at_an_old_offset():
    at = Position("t", 0, 5, 1_700_000_000_000)
    assert letter_id(at, b"k", b"v") == letter_id(Position("t", 0, 5, 1_700_000_000_000), b"k", b"v")
    others = [
        letter_id(Position("t", 0, 5, 1_700_000_000_001), b"k", b"v"),  # topic re-created: same offset, later
        letter_id(at, b"k", b"w"),
        letter_id(at, None, b"v"),
        letter_id(at, b"", b"v"),
        letter_id(at, b"kv", b""),
    ]
    assert len({letter_id(at, b"k", b"v"), *others}) == 1 + len(others)

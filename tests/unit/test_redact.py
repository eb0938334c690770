"""Unit tests (no services): redaction of passwords in URIs."""

from __future__ import annotations

from consumer.records import Position
from sentencify.redact import redact_uri

POS = Position("p.recommend_log", 0, 7)


def test_redaction_hides_passwords_only():
    assert redact_uri("mongodb://u:secret@h:1/db") == "mongodb://u:***@h:1/db"
    assert redact_uri("redis://h:6379/0") == "redis://h:6379/0"

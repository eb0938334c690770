"""Unit tests (no services): the simulator: deterministic, every anomaly class."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from consumer.records import Position
from consumer.validate import Validator
from sentencify.schemas import EVENT_TYPES
from sentencify.simulate import Manifest, generate

POS = Position("p.recommend_log", 0, 7)


def test_simulator_is_deterministic_and_covers_every_anomaly():
    start = datetime(2026, 11, 1, tzinfo=UTC)
    a = [(r.topic_suffix, r.value) for r in generate(300, seed=9, anomalies=0.5, start=start, embedding_dim=16)]
    b = [(r.topic_suffix, r.value) for r in generate(300, seed=9, anomalies=0.5, start=start, embedding_dim=16)]
    assert a == b
    m = Manifest()
    for r in generate(300, seed=9, anomalies=0.5, start=start, embedding_dim=16):
        m.add(r)
    assert set(m.expected_ids) == {et.name for et in EVENT_TYPES}
    assert m.dead_letters  # malformed records are part of the mix
    # Every produced good record validates with its model.
    validator = Validator(16)
    for r in generate(100, seed=1, anomalies=0.0, start=start, embedding_dim=16):
        validator.validate(BY_CODE_BY_NAME[r.topic_suffix], json.loads(r.value), POS)


BY_CODE_BY_NAME = {et.name: et for et in EVENT_TYPES}

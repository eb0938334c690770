"""Unit tests (no services): settings: defaults, errors naming the variable, the round trip through a child."""

from __future__ import annotations

import pytest

from consumer.records import Position
from sentencify.settings import Settings, SettingsError
from tests.helpers import ROOT

POS = Position("p.recommend_log", 0, 7)


def test_settings_defaults_and_errors_name_the_variable():
    s = Settings.from_env({})
    assert (s.batch_size, s.flush_interval_ms, s.topic_prefix, s.consumer_group, s.mongo_db) == (
        100,
        1000,
        "sentencify.",
        "sentencify-ingest",
        "sentencify",
    )
    assert s.embedding_dim == 384 and s.qdrant_collection == "context_block_v1"
    with pytest.raises(SettingsError, match="BATCH_SIZE"):
        Settings.from_env({"BATCH_SIZE": "lots"})
    with pytest.raises(SettingsError, match="DLQ_MAX_BAD_RATIO"):
        Settings.from_env({"DLQ_MAX_BAD_RATIO": "2"})
    assert Settings.from_env({"QDRANT_URL": "http://q:6333"}).qdrant_path is None


def test_settings_survive_a_child_process_and_each_is_documented():
    import dataclasses

    custom = dataclasses.replace(
        Settings.from_env({"QDRANT_URL": "http://q:6333", "SUPERSET_PASSWORD": "pw"}),
        batch_size=7,
        etl_time_gap_s=2.5,
        superset_port=9999,
    )
    assert Settings.from_env(custom.to_env()) == custom
    table = (ROOT / "docs" / "settings.md").read_text()
    undocumented = [v for v in Settings.variables() if f"`{v}`" not in table]
    assert not undocumented, f"add these to docs/settings.md's table: {undocumented}"

"""The contract's names live once (sentencify/contract.py); the older names are the same objects."""

from __future__ import annotations

from consumer import dead_letter, status
from sentencify import contract, replay
from sentencify.dashboard import bundle
from sentencify.erasure import forget
from sentencify.schemas import BY_CODE, EVENT_TYPES
from sentencify.settings import Settings
from sentencify.steps import etl, join, profiles, quarantine, touched, views


def test_raw_collections_and_topics_follow_the_contract() -> None:
    assert {t.code: t.name for t in EVENT_TYPES} == contract.RAW_COLLECTIONS
    assert [BY_CODE[c].name for c in "ABCDEFI"] == [touched.A, touched.B, touched.C, touched.D, touched.E, touched.F, touched.I]
    assert join.F == touched.F == "document_context_cache"
    assert BY_CODE["A"].topic("p.") == contract.topic("p.", contract.A) == "p.editor_recommend_options"
    assert Settings.from_env({}).topic_prefix == contract.DEFAULT_TOPIC_PREFIX == "sentencify."


def test_every_older_name_is_the_contracts() -> None:
    assert dead_letter.DEAD_LETTERS == views.DEAD_LETTERS == forget.DEAD_LETTERS == replay.DEAD_LETTERS == "dead_letters"
    assert etl.EXAMPLES == forget.EXAMPLES == contract.TRAINING_EXAMPLES == "training_examples"
    assert etl.REJECTS == forget.REJECTS == contract.ETL_REJECTS == "etl_rejects"
    assert profiles.PROFILES == forget.PROFILES == contract.USER_PROFILE == "user_profile"
    assert profiles.REDIS_KEY == forget.REDIS_PROFILE == contract.REDIS_PROFILE_KEY
    assert contract.redis_profile_key("u1") == "user_profile:u1"
    assert forget.QUARANTINE == quarantine.QUARANTINE
    assert status.KEY_PREFIX == contract.CONSUMER_STATUS_KEY_PREFIX == "sentencify:consumer:"
    assert status.LAG_KEY_PREFIX == contract.CONSUMER_LAG_KEY_PREFIX == "sentencify:consumer_lag:"
    assert bundle.SCHEMA == contract.PG_SCHEMA == "sentencify"
    assert etl.Orphans is join.Orphans

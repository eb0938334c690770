"""The operator of `sentencify_forget`: erase users (pipeline.md, "Personal data: erasure and suppression").

Thin, like the step operators: keyword-only arguments, no I/O in __init__, the hooks as cached
properties, the work in `sentencify.erasure.forget` (which knows nothing of Airflow). The user ids
come from the run's params (conf `{"user_ids": [...]}`) at execute time and are never a template
field, so Airflow does not keep them among a task's rendered fields, and they are never logged:
the log names users by the start of their hash. A retry resumes a half-done erasure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from functools import cached_property
from typing import Any

from airflow.providers.mongo.hooks.mongo import MongoHook
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.qdrant.hooks.qdrant import QdrantHook
from airflow.providers.redis.hooks.redis import RedisHook
from airflow.sdk import BaseOperator
from bson.codec_options import CodecOptions

from sentencify.settings import Settings
from sentencify_airflow import connections


def user_ids_of(value: Any) -> list[str]:
    """The `user_ids` param: a list of strings (or its JSON text, as a form may send it)."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip().startswith("[") else [value]
    if not isinstance(value, list) or not value or not all(isinstance(u, str) and u for u in value):
        raise ValueError('sentencify_forget needs conf {"user_ids": ["<user id>", ...]}: a non-empty list of ids')
    return value


class ForgetUsersOperator(BaseOperator):
    """Erase the users of the run's `user_ids` param from every store and suppress their later records."""

    template_fields: Sequence[str] = ("mongo_db",)
    ui_color = "#f3d9d9"

    def __init__(
        self,
        *,
        mongo_conn_id: str = connections.DEFAULT_IDS.mongo,
        redis_conn_id: str = connections.DEFAULT_IDS.redis,
        qdrant_conn_id: str = connections.DEFAULT_IDS.qdrant,
        postgres_conn_id: str = connections.DEFAULT_IDS.analytics,
        mongo_db: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mongo_conn_id = mongo_conn_id
        self.redis_conn_id = redis_conn_id
        self.qdrant_conn_id = qdrant_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.mongo_db = mongo_db

    @cached_property
    def hook(self) -> MongoHook:
        return MongoHook(mongo_conn_id=self.mongo_conn_id)

    @cached_property
    def redis_hook(self) -> RedisHook:
        return RedisHook(redis_conn_id=self.redis_conn_id)

    @cached_property
    def qdrant_hook(self) -> QdrantHook:
        return QdrantHook(conn_id=self.qdrant_conn_id)

    @cached_property
    def postgres_hook(self) -> PostgresHook:
        return PostgresHook(postgres_conn_id=self.postgres_conn_id)

    def _qdrant(self, settings: Settings):
        path = connections.qdrant_local_path(connections.get(self.qdrant_conn_id, "Qdrant"))
        if path is None:
            return self.qdrant_hook.get_conn()
        import dataclasses

        from sentencify import vectorstore  # local mode (the local stack): QdrantHook cannot open a path

        return vectorstore.client(dataclasses.replace(settings, qdrant_url=None, qdrant_path=path))

    def execute(self, context) -> list[dict]:
        from sentencify.erasure.forget import forget_users
        from sentencify.steps.runner import Stores

        users = user_ids_of((context.get("params") or {}).get("user_ids"))
        settings = Settings.from_env()
        db = self.hook.get_conn().get_database(
            connections.mongo_database(self.mongo_conn_id, self.mongo_db),
            codec_options=CodecOptions(tz_aware=True, tzinfo=UTC),
        )

        def redis():
            connections.get(self.redis_conn_id, "Redis")
            return self.redis_hook.get_conn()

        def analytics():
            connections.get(self.postgres_conn_id, "analytics PostgreSQL")
            return self.postgres_hook.get_conn()

        stores = Stores(redis=redis, qdrant=lambda: self._qdrant(settings), analytics=analytics)
        self.log.info("erasing %d user(s)", len(users))
        erased = forget_users(
            settings,
            users,
            db=db,
            stores=stores,
            progress=lambda who, store, n: self.log.info("%s %s: %d removed", who, store, n),
        )
        # What goes to XCom: hashes (cut) and counts, no personal data.
        return [{"user_hash": e.user_hash[:12], "removed": e.removed, "hours": e.hours} for e in erased]

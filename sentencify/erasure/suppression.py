"""The suppression list: keyed hashes of erased users (and of the keys that tie their D and E records
to them), and the one check every writer of personal data makes before it writes (pipeline.md,
"Personal data: erasure and suppression"; events.md, the last paragraph).

Collection `erasure_suppressions`: `_id` = the hex hash (sentencify.erasure.keys), `kind` (user,
context_hash or correction_history_id), `request` (the user hash of the erasure that added it),
`added_at`. Never an id.

Who checks: the consumer before it stores or dead-letters a record (one query per batch), the
replay before it sends a letter, and the chain's steps before they publish a user (defence in
depth behind the leases' fencing; `suppressed_users`).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from sentencify.erasure import keys
from sentencify.mongo import find_in
from sentencify.settings import Settings

SUPPRESSIONS = "erasure_suppressions"
HASH_BATCH = 100  # hashes per `$in` query (the local server plans long lists badly: sentencify.mongo.IN_BATCH)

# Which fields of a record name its person (events.md "Fields"). A, B, C, E, I: `user_id`; D: `user`.
# D and E can also arrive without any user field: their keys (D's correction_history_id, which the
# user's C pointed at; E's context_hash, which the user's A pointed at) are kept hashed too, and so
# is the doc_id of a document only the user named (its F records, which name no user).
USER_FIELDS: dict[str, tuple[str, ...]] = {
    "editor_recommend_options": ("user_id",),
    "editor_run_paraphrasing": ("user_id",),
    "editor_selected_paraphrasing": ("user_id",),
    "correction_history": ("user",),
    "context_block": ("user_id",),
    "recommend_log": ("user_id",),
    "document_context_cache": (),
}
KEY_FIELDS: dict[str, tuple[str, str]] = {
    "correction_history": ("correction_history_id", keys.CORRECTION),
    "context_block": ("context_hash", keys.CONTEXT_HASH),
    "document_context_cache": ("doc_id", keys.DOC),
}

Identity = tuple[str, str]  # (kind, value)


def identities(collection: str | None, record: Mapping[str, Any]) -> list[Identity]:
    """The (kind, value) pairs by which `record` of `collection` can belong to an erased user:
    its user field, and for D and E their key. `collection` None (a record of an unknown topic):
    every field any log type names its person or its key with. Only string values count."""
    if collection is None:
        user_fields: Iterable[str] = ("user_id", "user")
        key_fields: Iterable[tuple[str, str]] = KEY_FIELDS.values()
    else:
        user_fields = USER_FIELDS.get(collection, ())
        key_fields = [KEY_FIELDS[collection]] if collection in KEY_FIELDS else []
    out: list[Identity] = [(keys.USER, v) for f in user_fields if isinstance(v := record.get(f), str)]
    out += [(kind, v) for f, kind in key_fields if isinstance(v := record.get(f), str)]
    return out


def raw_identities(topic_collection: str | None, raw: bytes | None, key: bytes | None = None) -> list[Identity]:
    """Identities of a record given as its bytes (a dead letter, a replay): those of the JSON object
    the bytes hold, if they do, and its Kafka key taken as a user id (a letter whose key is an
    erased id is the user's: the erasure removes it)."""
    out: list[Identity] = []
    if key:
        with suppress(UnicodeDecodeError):  # a key that is not text names no user
            out.append((keys.USER, bytes(key).decode("utf-8")))
    if not raw:
        return out
    try:
        record = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return out
    return out + identities(topic_collection, record) if isinstance(record, dict) else out


class SuppressionList:
    """The check of one writer: `suppressed(records)` answers with one query per HASH_BATCH hashes.

    `key` None (ERASURE_KEY unset, no local stack): nothing can be recognised, so while the list
    is empty every record passes, and once it holds anything `suppressed` raises ErasureKeyMissing
    (a writer must not store what it cannot check)."""

    def __init__(self, db: Database, key: bytes | None) -> None:
        self.db, self.key = db, key

    def suppressed(self, records: list[list[Identity]]) -> set[int]:
        """Indexes of `records` (each given by its identities) that belong to an erased user."""
        wanted = [(i, keys.digest(self.key, v, kind)) for i, ids in enumerate(records) for kind, v in ids] if self.key else []
        if self.key is None:
            if any(records) and self.db[SUPPRESSIONS].find_one({}, {"_id": 1}) is not None:
                raise keys.ErasureKeyMissing(
                    "ERASURE_KEY is not set but erasure_suppressions lists erased users: set ERASURE_KEY "
                    "(the key `sentencify forget` used) so their records can be recognised"
                )
            return set()
        if not wanted:
            return set()
        found = {d["_id"] for d in find_in(self.db[SUPPRESSIONS], "_id", [h for _, h in wanted], {"_id": 1}, batch=HASH_BATCH)}
        return {i for i, h in wanted if h in found}

    def is_suppressed(self, identities_: list[Identity]) -> bool:
        return bool(self.suppressed([identities_]))


def add(db: Database, hashes: Iterable[tuple[str, str]], request: str) -> int:
    """Upsert (hash, kind) pairs into the list, for the erasure `request` (its user hash). Idempotent."""
    now = datetime.now(UTC)
    ops = [
        UpdateOne({"_id": h}, {"$setOnInsert": {"kind": kind, "request": request, "added_at": now}}, upsert=True)
        for h, kind in hashes
    ]
    for i in range(0, len(ops), 1000):
        db[SUPPRESSIONS].bulk_write(ops[i : i + 1000], ordered=False)
    return len(ops)


# -- the chain's steps -------------------------------------------------------------------------

_STEP_KEY: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("sentencify_erasure_key", default=None)


@contextmanager
def for_steps(settings: Settings) -> Iterator[None]:
    """While a step runs (sentencify.steps.runner): the key `suppressed_users` checks with. A
    missing key is not an error here until the list holds something (`SuppressionList`)."""
    try:
        key: bytes | None = keys.erasure_key(settings)
    except keys.ErasureKeyMissing:
        key = None
    token = _STEP_KEY.set(key)
    try:
        yield
    finally:
        _STEP_KEY.reset(token)


def suppressed_users(db: Database, user_ids: Iterable[str | None]) -> set[str]:
    """Which of these user ids are erased: what a step leaves out of what it publishes, so no run
    publishes an erased user again (pipeline.md). One query per HASH_BATCH users."""
    users = sorted({u for u in user_ids if isinstance(u, str)})
    if not users:
        return set()
    hit = SuppressionList(db, _STEP_KEY.get()).suppressed([[(keys.USER, u)] for u in users])
    return {users[i] for i in hit}

"""The keyed hash of an erased id: HMAC-SHA-256 with ERASURE_KEY, as lowercase hex (pipeline.md, "Personal data").

Only this hash is ever kept of an erased user (in `erasure_suppressions` and `erasure_requests`):
without the key, a hash cannot be checked against a guessed id. The key comes from ERASURE_KEY;
the local stack generates one into its directory (`sentencify stack up`); production must set it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sentencify.settings import Settings, SettingsError

KEY_FILE = "erasure_key"  # in STACK_DIR: the local stack's generated key (mode 600)

# What a hash stands for. A user id is hashed as it is (the request's `user_hash` is exactly
# HMAC(ERASURE_KEY, user_id)); the keys that tie D and E to a user get a prefix of their own, so a
# context_hash that happens to equal a user id never suppresses that user.
USER = "user"
CONTEXT_HASH = "context_hash"
CORRECTION = "correction_history_id"
DOC = "doc_id"  # a document only the user's records named: its F records
KINDS = (USER, CONTEXT_HASH, CORRECTION, DOC)


class ErasureKeyMissing(SettingsError):
    """Neither ERASURE_KEY nor a local stack's generated key: erased users cannot be recognised."""


def generate() -> str:
    """A new key: 32 random bytes as hex."""
    return secrets.token_hex(32)


def erasure_key(settings: Settings) -> bytes:
    """ERASURE_KEY, or the key the local stack generated in STACK_DIR. Raises ErasureKeyMissing
    (one line: what to set) when there is neither. The key is never printed or logged."""
    if settings.erasure_key:
        return settings.erasure_key.encode("utf-8")
    path = settings.stack_dir / KEY_FILE
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    if not text:
        raise ErasureKeyMissing(
            "ERASURE_KEY is not set: set it to the secret key of erased users' hashes (the same on every "
            "host, kept like a password; `python -c 'import secrets; print(secrets.token_hex(32))'` makes one), "
            "or start the local stack (`sentencify stack up`), which generates one"
        )
    return text.encode("utf-8")


def erasure_key_or_none(settings: Settings) -> bytes | None:
    """The key, or None when there is none (a writer that then finds the suppression list non-empty
    refuses to write: sentencify.erasure.suppression.SuppressionList)."""
    try:
        return erasure_key(settings)
    except ErasureKeyMissing:
        return None


def digest(key: bytes, value: str, kind: str = USER) -> str:
    """HMAC-SHA-256 of `value` (UTF-8; lone surrogates kept as they came) under `key`, lowercase
    hex (64 characters). `kind` USER hashes the id alone; the other kinds hash "<kind>:<value>"."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    text = value if kind == USER else f"{kind}:{value}"
    return hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def user_hash(key: bytes, user_id: str) -> str:
    """The hash an erased user is known by: HMAC-SHA-256(ERASURE_KEY, user_id), hex."""
    return digest(key, user_id, USER)

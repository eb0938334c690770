"""Hide passwords in connection URIs (and in text that may hold them) before they reach a log or a terminal."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)(?P<user>[^:@/\s]*):(?P<password>[^@/\s]*)@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&;](?:password|passwd|pwd|api_key|apikey|token|secret)=)[^&;\s]*", re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """`mongodb://u:secret@h/db` -> `mongodb://u:***@h/db`; `?password=x` -> `?password=***`;
    text without a password is unchanged (also works on a message holding URIs)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", uri)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}***", text)


redact_text = redact_uri

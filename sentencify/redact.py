"""Hide passwords in connection URIs before they reach a log or a terminal."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"^(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:@/]*):(?P<password>[^@/]*)@")


def redact_uri(uri: str) -> str:
    """`mongodb://u:secret@h/db` -> `mongodb://u:***@h/db`; URIs without a password are unchanged."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", uri)

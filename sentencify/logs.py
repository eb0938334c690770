"""Logging: one JSON object per line on stderr for services, a short line per event for the CLI.

Both formats pass every line through `redact_text`: a password inside a URI never reaches a log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from sentencify.redact import redact_text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(out, default=str))


class HumanFormatter(logging.Formatter):
    """`12:00:01 info  sentencify.etl: etl done touched_sessions=3 ...` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, tz=UTC).strftime("%H:%M:%S")
        fields = " ".join(
            f"{k}={json.dumps(v, default=str) if not isinstance(v, str) else v}"
            for k, v in (getattr(record, "fields", None) or {}).items()
        )
        line = f"{when} {record.levelname.lower():<5} {record.name}: {record.getMessage()}" + (f" {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact_text(line)


def setup(level: str = "INFO", human: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(HumanFormatter() if human else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kafka-python logs every rebalance step at INFO; keep its warnings only - and the fetcher's INFO
    # lines about offset resets and out-of-range answers (records skipped: never hidden).
    logging.getLogger("kafka").setLevel(logging.WARNING)
    fetcher = logging.getLogger(KAFKA_FETCHER)
    fetcher.setLevel(logging.INFO)
    if not any(isinstance(f, OffsetResets) for f in fetcher.filters):
        fetcher.addFilter(OffsetResets())


KAFKA_FETCHER = "kafka.consumer.fetcher"


class OffsetResets(logging.Filter):
    """kafka-python's fetcher: warnings and errors, and of its INFO lines only the offset resets."""

    WORDS = ("Resetting offset", "out of range")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or any(w in str(record.msg) for w in self.WORDS)


def kv(**fields) -> dict:
    """`log.info("msg", extra=kv(a=1))` puts a=1 into the JSON line."""
    return {"fields": fields}

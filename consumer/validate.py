"""Validate: JSON object -> the MongoDB document of its event type."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from consumer.decode import decode
from consumer.records import BadRecord, Position
from consumer.route import Router
from consumer.storable import check_storable
from sentencify.schemas import EventType


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class Validator:
    """Delivery: pure; returns the document to store (fields as sent, timestamps as UTC dates) or raises BadRecord."""

    def __init__(self, embedding_dim: int) -> None:
        self._context = {"embedding_dim": embedding_dim}

    def validate(self, event_type: EventType, obj: dict[str, Any], position: Position) -> dict[str, Any]:
        try:
            model = event_type.model.model_validate(obj, context=self._context)
        except ValidationError as exc:
            raise BadRecord("schema", f"{event_type.code} {event_type.name}: {_describe(exc)}") from None
        # exclude_unset keeps the document as the producer sent it: absent stays absent.
        doc = model.model_dump(exclude_unset=True)
        doc["_id"] = doc[event_type.key_field]
        doc["_kafka"] = {"topic": position.topic, "partition": position.partition, "offset": position.offset}
        return doc


def stamp_ingested(docs: list[dict[str, Any]], now: datetime) -> None:
    """`ingested_at` is the time the consumer writes the batch (events.md, 'What the consumer adds')."""
    for doc in docs:
        doc["ingested_at"] = now


def to_document(
    router: Router, validator: Validator, max_record_bytes: int, position: Position, value: bytes | None
) -> tuple[str, dict[str, Any]]:
    """Delivery: pure; (collection, document MongoDB can store) or BadRecord naming what is wrong.

    decode -> route -> validate -> check what MongoDB can store; anything else that goes wrong
    because of the record's content is turned into a BadRecord too, so no record can crash the loop.
    """
    try:
        event_type = router.route(position.topic)
        doc = validator.validate(event_type, decode(value, max_record_bytes), position)
        check_storable(doc, len(value or b""))
        return event_type.name, doc
    except BadRecord:
        raise
    except Exception as exc:  # noqa: BLE001 (a record no check foresaw: its own dead letter, never a crash)
        raise BadRecord("unprocessable", f"{type(exc).__name__}: {exc}") from None

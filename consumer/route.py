"""Route: topic name -> event type (and so model, collection and key field)."""

from __future__ import annotations

from consumer.records import BadRecord
from sentencify.schemas import EventType, topics


class Router:
    """Delivery: pure; known topics map to their event type, any other topic raises BadRecord."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._by_topic = topics(prefix)

    @property
    def topic_names(self) -> list[str]:
        return sorted(self._by_topic)

    def route(self, topic: str) -> EventType:
        try:
            return self._by_topic[topic]
        except KeyError:
            raise BadRecord(
                "unknown_topic", f"topic {topic!r} is not one of the seven log topics under prefix {self.prefix!r}"
            ) from None

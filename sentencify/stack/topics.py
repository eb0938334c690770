"""Create the seven log topics with several partitions (idempotent)."""

from __future__ import annotations

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from sentencify.kafka_config import kafka_security
from sentencify.schemas import topics
from sentencify.settings import Settings


def create_topics(settings: Settings, extra: list[str] | None = None) -> list[str]:
    """Returns the topics created now (existing ones are left as they are)."""
    names = sorted(topics(settings.topic_prefix)) + list(extra or [])
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","), client_id="sentencify-admin", **kafka_security(settings)
    )
    created = []
    try:
        # One request per topic: a single existing topic must not fail the others.
        for name in names:
            try:
                response = admin.create_topics([NewTopic(name, settings.topic_partitions, 1)])
            except TopicAlreadyExistsError:
                continue
            errors = [e for e in getattr(response, "topic_errors", []) if e[1] not in (0, 36)]  # 36: already exists
            if errors:
                raise RuntimeError(f"creating topic {name} failed: {errors}")
            if all(e[1] == 0 for e in getattr(response, "topic_errors", [])):
                created.append(name)
    finally:
        admin.close()
    return created

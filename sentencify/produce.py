"""Send simulated records to Kafka (the simulator's transport; the API does the same in production)."""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaProducer

from sentencify.kafka_config import kafka_security
from sentencify.progress import Progress
from sentencify.settings import Settings
from sentencify.simulate import Manifest, Record


def producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        # Oversized records are produced on purpose (the consumer dead-letters them).
        max_request_size=4 * 1024 * 1024,
        client_id="sentencify-simulate",
        **kafka_security(settings),
    )


def produce(settings: Settings, records: Iterable[Record], *, total: int | None = None, progress: bool = True) -> Manifest:
    """Delivery: waits for every send to be acknowledged; raises on the first failed send."""
    manifest = Manifest()
    bar = Progress(total, "simulate") if progress else None
    kafka = producer(settings)
    futures = []
    try:
        for record in records:
            futures.append(kafka.send(settings.topic_prefix + record.topic_suffix, key=record.key, value=record.value))
            manifest.add(record)
            if bar:
                bar.update()
            if len(futures) >= 5000:
                for f in futures:
                    f.get(timeout=60)
                futures.clear()
        kafka.flush()
        for f in futures:
            f.get(timeout=60)
    finally:
        kafka.close()
        if bar:
            bar.close()
    return manifest

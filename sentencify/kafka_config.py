"""Kafka client security settings (interfaces.md): one mapping, used by every Kafka client of the project."""

from __future__ import annotations

from typing import Any

from sentencify.settings import Settings


def kafka_security(settings: Settings) -> dict[str, Any]:
    """kafka-python keyword arguments for TLS and SASL; empty for the default PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        out.update(
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
            ssl_check_hostname=True,
        )
    if protocol.startswith("SASL_"):
        out.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return out

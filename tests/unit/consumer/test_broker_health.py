"""BrokerHealth: the verdict from call outcomes and kafka-python's connection log records."""

from __future__ import annotations

import logging
import time

from kafka.conn import ConnectionStates
from kafka.errors import KafkaConnectionError, SaslAuthenticationFailedError

from consumer.broker import KAFKA_CONN_LOGGER, BrokerHealth


class FakeConn:
    def __init__(self, state: str) -> None:
        self.state = state

    def __str__(self) -> str:
        return f"<BrokerConnection {self.state}>"


def closing(conn: FakeConn, error: Exception | None) -> logging.LogRecord:
    level = logging.ERROR if error else logging.INFO
    return logging.LogRecord(KAFKA_CONN_LOGGER, level, "conn.py", 1, "%s: Closing connection. %s", (conn, error or ""), None)


def test_answers_keep_it_healthy_and_a_short_failure_is_not_an_outage():
    health = BrokerHealth(grace_s=0.2)
    assert health.degraded("PLAINTEXT") is None
    health.failed("commit: KafkaTimeoutError")
    assert health.degraded("PLAINTEXT") is None  # within the grace
    time.sleep(0.25)
    health.failed("end offsets: KafkaTimeoutError")
    why = health.degraded("PLAINTEXT")
    assert why and why.startswith("Kafka broker not answering (end offsets: KafkaTimeoutError")
    health.ok()
    assert health.degraded("PLAINTEXT") is None


def test_a_login_refused_is_named_at_once_with_the_login_and_never_the_password():
    health = BrokerHealth(grace_s=60)
    health.emit(closing(FakeConn(ConnectionStates.AUTHENTICATING), KeyError("v")))
    why = health.degraded("SASL_PLAINTEXT SCRAM-SHA-512 as 'ingest'")
    assert why and "refused our login or TLS settings (SASL_PLAINTEXT SCRAM-SHA-512 as 'ingest')" in why
    health.ok()
    assert health.degraded("x") is None


def test_a_sasl_error_code_is_a_refused_login_whatever_the_state():
    health = BrokerHealth(grace_s=60)
    health.emit(closing(FakeConn(ConnectionStates.CONNECTED), SaslAuthenticationFailedError("bad password")))
    assert "refused our login" in (health.degraded("SASL_SSL") or "")


def test_an_ordinary_disconnect_alone_says_nothing():
    health = BrokerHealth(grace_s=0)
    health.emit(closing(FakeConn(ConnectionStates.CONNECTED), KafkaConnectionError("socket disconnected")))
    health.emit(closing(FakeConn(ConnectionStates.CONNECTED), None))  # an idle connection closed: INFO
    assert health.degraded("PLAINTEXT") is None

"""Secrets stay secret and bad input on the command line gets a sentence (no services needed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sentencify.kafka_config import kafka_security
from sentencify.redact import redact_text
from sentencify.settings import Settings, SettingsError
from tests.helpers import ROOT

SECRETS = {
    "MONGO_URI": "mongodb://app:mongo-s3cret@127.0.0.1:1/?authSource=admin",
    "REDIS_URL": "redis://:redis-s3cret@127.0.0.1:1/0",
    "ANALYTICS_DB_URI": "postgresql://sentencify:pg-s3cret@127.0.0.1:1/analytics",
    "ANALYTICS_READER_URI": "postgresql://reader:reader-s3cret@127.0.0.1:1/analytics",
    "QDRANT_URL": "http://127.0.0.1:1",
    "QDRANT_API_KEY": "qdrant-s3cret",
    "SUPERSET_PASSWORD": "superset-s3cret",
    "SUPERSET_SECRET_KEY": "key-s3cret",
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_USERNAME": "svc",
    "KAFKA_SASL_PASSWORD": "kafka-s3cret",
}


def test_repr_and_shown_settings_never_hold_a_secret():
    s = Settings.from_env(SECRETS)
    text = repr(s) + str(s) + " ".join(str(s.shown(f)) for f in s.__dataclass_fields__)
    assert "s3cret" not in text
    assert "mongodb://app:***@127.0.0.1:1" in text and "'***'" in text


@pytest.mark.parametrize(
    "env, words",
    [
        ({"MONGO_URI": "not a uri"}, "MONGO_URI must start with mongodb://"),
        ({"MONGO_URI": "mongodb://"}, "MONGO_URI has no host"),
        ({"REDIS_URL": "http://u:pw-s3cret@h"}, "REDIS_URL must start with redis://"),
        ({"ANALYTICS_DB_URI": "mysql://u:pw-s3cret@h/db"}, "ANALYTICS_DB_URI must start with postgresql://"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "broker"}, "KAFKA_BOOTSTRAP_SERVERS must be host:port"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SSL_CAFILE": "/nowhere/ca.pem"}, "KAFKA_SSL_CAFILE names"),
    ],
)
def test_settings_check_uris_at_start_and_name_the_variable_without_the_password(env, words):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert words in str(err.value) and "s3cret" not in str(err.value)


def test_kafka_security_maps_to_every_client(tmp_path):
    """The local broker (tansu 0.6) takes --cert/--key but did not complete a TLS handshake with
    kafka-python here, so the mapping is what is tested; every client builds its kwargs from it."""
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert kafka_security(Settings.from_env({})) == {"security_protocol": "PLAINTEXT"}
    ssl = kafka_security(Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(ca)}))
    assert ssl["security_protocol"] == "SSL" and ssl["ssl_cafile"] == str(ca) and ssl["ssl_check_hostname"]
    assert "sasl_mechanism" not in ssl
    sasl = kafka_security(
        Settings.from_env(
            {
                "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                "KAFKA_SASL_MECHANISM": "scram-sha-512",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
            }
        )
    )
    assert (sasl["security_protocol"], sasl["sasl_mechanism"], sasl["sasl_plain_username"], sasl["sasl_plain_password"]) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "u",
        "p",
    )
    from kafka import KafkaProducer

    assert set(sasl) <= set(KafkaProducer.DEFAULT_CONFIG)  # every key is a kafka-python setting
    for path in ("consumer/service.py", "sentencify/produce.py", "sentencify/stack/topics.py"):
        assert "kafka_security(" in (ROOT / path).read_text(), f"{path} builds a Kafka client without the security settings"


def sentencify(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sentencify.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    "args, env, words",
    [
        (["run", "etl", "--start", "yesterday", "--end", "2026-01-01"], {}, "not an ISO-8601 timestamp"),
        (["run", "etl", "--start", "2026-01-02", "--end", "2026-01-01"], {}, "must be after its start"),
        (["run", "nope", "--start", "2026-01-01", "--end", "2026-01-02"], {}, "invalid choice"),
        (["summary"], {"MONGO_URI": "not a uri"}, "MONGO_URI must start with"),
        (
            ["run", "etl", "--start", "2026-01-01", "--end", "2026-01-01T01:00"],
            SECRETS | {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
            "MongoDB (mongodb://app:***@127.0.0.1:1",
        ),
    ],
)
def test_every_cli_error_is_one_line_with_exit_2_and_no_secret(args, env, words):
    out = sentencify(*args, env=env)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], out.stderr
    assert "Traceback" not in out.stderr and "s3cret" not in out.stderr + out.stdout


def test_verbose_shows_the_traceback_still_without_secrets():
    out = sentencify(
        "-v",
        "run",
        "etl",
        "--start",
        "2026-01-01",
        "--end",
        "2026-01-01T01:00",
        env=SECRETS | {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
    )
    assert out.returncode == 2 and "Traceback" in out.stderr and "s3cret" not in out.stderr


def test_redact_text_hides_passwords_in_uris_and_query_strings():
    assert redact_text("x mongodb://u:pw@h/ y") == "x mongodb://u:***@h/ y"
    assert redact_text("postgresql://h/db?user=a&password=zz") == "postgresql://h/db?user=a&password=***"
    assert redact_text("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"

"""Kafka client security settings (interfaces.md): one mapping, used by every Kafka client of the project."""

from __future__ import annotations

from typing import Any

from sentencify.errors import store_errors
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


def _kafka_cause(settings: Settings) -> str:
    """Why the first broker refuses us: our own connection, TLS handshake (same files as the client),
    then the login. kafka-python itself only times out or says "no brokers" (a SASL refusal closes the
    connection mid-handshake: its clients wait for metadata until max_block_ms)."""
    import socket
    import ssl

    host, _, port = settings.kafka_bootstrap_servers.split(",")[0].strip().rpartition(":")
    sasl = "check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    try:
        raw = socket.create_connection((host, int(port)), timeout=5)
    except (OSError, ValueError):
        return f"nothing answers at {host}:{port}: is it up, and is KAFKA_BOOTSTRAP_SERVERS right?"
    with raw:
        if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
            return f"the broker did not let us in: {sasl}"
        ctx = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            ctx.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
        try:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.settimeout(2)
                tls.recv(1)  # TLS 1.3: the server's verdict on our certificate arrives after the handshake
        except ssl.SSLCertVerificationError:
            return "the broker's certificate is not trusted: check KAFKA_SSL_CAFILE (the CA that signed it)"
        except ssl.SSLError as exc:
            return f"the broker refused our login ({exc.reason}): check KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE"
        except (TimeoutError, OSError):
            pass
    if settings.kafka_security_protocol == "SASL_SSL":
        return f"TLS is fine but the broker did not let us in: {sasl}"
    return "is it up, and are KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE right?"


def _raised_in(exc: BaseException, package: str) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(package):
            return True
        tb = tb.tb_next
    return False


def explain_connection_error(exc: BaseException, settings: Settings | None) -> str | None:
    """One line naming the service and the setting when TLS or a login is refused; None for other errors.

    Wrong CA -> the certificate is not trusted (the URI's CA parameter or KAFKA_SSL_CAFILE); wrong
    password or certificate -> the login was refused (the URI's password, the Kafka client certificate,
    or KAFKA_SASL_*); a Kafka broker that does not answer at all -> KAFKA_BOOTSTRAP_SERVERS."""
    text = str(exc)
    module = type(exc).__module__.split(".")[0]
    if module == "ssl" and _raised_in(exc, "kafka."):  # kafka-python lets the TLS handshake's error through
        module = "kafka"
    untrusted = "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text
    if settings is None:
        return None
    if module == "kafka" and settings.kafka_security_protocol != "PLAINTEXT":
        where = f"Kafka ({settings.kafka_bootstrap_servers}, {settings.kafka_security_protocol})"
        return f"{where}: {_kafka_cause(settings)}"
    drivers = store_errors()
    if isinstance(exc, drivers.get("mongo", ())):
        where = f"MongoDB ({settings.shown('mongo_uri')})"
        if untrusted:
            return f"{where}: the server's certificate is not trusted: check tlsCAFile in MONGO_URI"
        if "Authentication failed" in text or getattr(exc, "code", None) == 18:
            return f"{where}: login refused: check the user and password in MONGO_URI"
    if isinstance(exc, drivers.get("redis", ())):
        where = f"Redis ({settings.shown('redis_url')})"
        if untrusted:
            return f"{where}: the server's certificate is not trusted: check ssl_ca_certs in REDIS_URL"
        if type(exc).__name__ == "AuthenticationError" or "WRONGPASS" in text or "invalid password" in text:
            return f"{where}: login refused: check the password in REDIS_URL"
    if module in ("psycopg2", "sqlalchemy"):
        where = f"PostgreSQL ({settings.shown('analytics_db_uri')})"
        if untrusted:
            return f"{where}: the server's certificate is not trusted: check sslrootcert in ANALYTICS_DB_URI"
        if "password authentication failed" in text:
            return f"{where}: login refused: check the user and password in ANALYTICS_DB_URI"
    return None

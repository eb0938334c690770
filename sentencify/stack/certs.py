"""A local certificate authority for the secured stack: CA, server and client certificates (PEM).

Made once per stack directory with `cryptography`; private keys are written mode 600 from the
start. The server certificate names `localhost` and `127.0.0.1`, so clients verify hostnames.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sentencify.stack.process import write_private

VALID_DAYS = 825  # the longest lifetime clients accept for a server certificate


@dataclass(frozen=True)
class Certs:
    """Paths of the PEM files under `<stack>/tls/`."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def client(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sentencify local stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )
    if issuer is None:  # the CA
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
    return builder.sign(issuer_key, hashes.SHA256())


def make_ca(directory: Path, name: str = "Sentencify local CA") -> tuple[Path, Path]:
    """A CA certificate and key in `directory` (ca.pem, ca.key); also used by tests to make a wrong CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(name, key, None, key, server=False)
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / "ca.key", _key_pem(key))
    (directory / "ca.pem").write_text(_cert_pem(cert))
    return directory / "ca.pem", directory / "ca.key"


def ensure_certs(directory: Path) -> Certs:
    """The stack's CA, server and client certificates, made once (kept while the CA file exists)."""
    certs = Certs(directory)
    if certs.ca.exists() and certs.server.exists() and certs.client.exists():
        return certs
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # PostgreSQL (its own user) reads the server certificate
    make_ca(directory)
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), None)
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    for pem, key_path, subject, server in (
        (certs.server, certs.server_key, "localhost", True),
        (certs.client, certs.client_key, "sentencify", False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(key_path, _key_pem(key))
        pem.write_text(_cert_pem(_issue(subject, key, ca, ca_key, server=server)))
    return certs

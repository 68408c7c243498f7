"""Certificates: checking the configured pair, or minting a throw-away one."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inbox_asgi.config import ConfigError

HELP = (
    "see certs/README.md for how to make one (openssl, mkcert), "
    "or run with -self-signed for a throw-away localhost certificate, "
    "or with -https=false behind a TLS-terminating proxy"
)


def check_certificate_files(cert: str, key: str) -> None:
    """Fail with a message naming the file, before uvicorn would fail with a traceback."""
    for what, name in (("certificate", cert), ("private key", key)):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"TLS {what} file {str(path)!r} not found: {HELP}")
        try:
            path.read_bytes()
        except OSError as error:
            reason = error.strerror
            raise ConfigError(f"TLS {what} file {str(path)!r} unreadable ({reason}): {HELP}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as error:
        raise ConfigError(f"TLS certificate {cert!r} and key {key!r} do not load: {error}; {HELP}") from None


def write_self_signed(directory: Path | None = None) -> tuple[Path, Path]:
    """A one-day certificate for localhost, 127.0.0.1 and ::1; returns (cert, key) paths."""
    directory = directory or Path(tempfile.mkdtemp(prefix="inbox-asgi-cert-"))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "self-signed.crt"
    key_path = directory / "self-signed.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path

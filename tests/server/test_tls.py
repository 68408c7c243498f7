"""TLS on the real server: nothing below TLS 1.2, TLS 1.2 and 1.3 work, and the full chain is served.

The server's certificate is issued by an intermediate CA; clients trust only
the root, so a handshake verifies only if the server sends the intermediate.

A client forced down to TLS 1.1 must first prove it can speak it at all (this
OpenSSL refuses to offer TLS < 1.2 at its default security level, hence
`@SECLEVEL=0`): it completes a TLS 1.1 handshake with an in-process control
server. Then its ClientHello, sent to inbox-asgi, gets no ServerHello back (the
server closes the connection; asyncio's TLS does not even send its alert),
while the same client setup capped at TLS 1.2 gets one and completes.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from ..support import ServerProcess, start_server

Address = tuple[str, int]


class Chain:
    """Root CA → intermediate CA → server certificate for 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        self.root = trustme.CA()
        intermediate = self.root.create_child_ca()
        self.leaf = intermediate.issue_cert("127.0.0.1", "localhost")
        self.full_chain = directory / "chain.pem"  # server certificate + intermediate
        self.full_chain.write_bytes(b"".join(blob.bytes() for blob in self.leaf.cert_chain_pems))
        self.leaf_only = directory / "leaf.pem"
        self.leaf_only.write_bytes(self.leaf.cert_chain_pems[0].bytes())
        self.key = directory / "server.key"
        self.leaf.private_key_pem.write_to_path(str(self.key))
        self.root_path = directory / "root.pem"
        self.root.cert_pem.write_to_path(str(self.root_path))
        assert len(self.leaf.cert_chain_pems) == 2


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return Chain(tmp_path_factory.mktemp("chain"))


@pytest.fixture(scope="module")
def server(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tls = (str(chain.full_chain), str(chain.key), str(chain.root_path))
    process = start_server([], cwd=tmp_path_factory.mktemp("tls-server"), tls=tls)
    yield process
    process.stop()


def client_context(
    chain: Chain, *, lowest: ssl.TLSVersion, highest: ssl.TLSVersion, ciphers: str = "DEFAULT:@SECLEVEL=0"
) -> ssl.SSLContext:
    """A verifying client that trusts only the root and offers exactly lowest..highest."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(chain.root_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1/TLSv1_1 are deprecated
        context.minimum_version = lowest
        context.maximum_version = highest
    context.set_ciphers(ciphers)
    return context


def handshake(context: ssl.SSLContext, address: Address) -> tuple[str, str]:
    """Connect, complete a handshake and one HTTP request; (TLS version, status line)."""
    with (
        socket.create_connection(address, timeout=10) as plain,
        context.wrap_socket(plain, server_hostname=address[0]) as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        status = tls.makefile("rb").readline().decode().strip()
        return str(tls.version()), status


def server_reply(context: ssl.SSLContext, address: Address) -> tuple[bytes, bytes]:
    """The ClientHello `context` sends, and the first bytes the server answers (b"" if it hangs up)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=address[0])
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(hello)
        try:
            return hello, sock.recv(5)
        except ConnectionResetError:
            return hello, b""


HANDSHAKE_RECORD = b"\x16"  # a ServerHello comes in one; an alert is b"\x15"
#: ClientHello.client_version (bytes 9-10 of the record) per version.
CLIENT_VERSION = {ssl.TLSVersion.TLSv1: b"\x03\x01", ssl.TLSVersion.TLSv1_1: b"\x03\x02"}


@pytest.fixture(scope="module")
def control_server(chain: Chain) -> Iterator[Callable[[str], Address]]:
    """Factory: an in-process TLS server accepting TLS 1.0 and up, serving `which` of the chain files."""
    listeners: list[socket.socket] = []

    def start(which: str) -> Address:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(getattr(chain, which)), str(chain.key))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return  # closed at teardown
                try:
                    with context.wrap_socket(connection, server_side=True) as tls:
                        tls.recv(4096)
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                except (OSError, ssl.SSLError):
                    connection.close()

        threading.Thread(target=serve, daemon=True).start()
        return listener.getsockname()[:2]

    yield start
    for listener in listeners:
        listener.close()


LEGACY = [ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1]
MODERN = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.parametrize("version", LEGACY, ids=lambda version: version.name)
def test_refuses_tls_below_1_2(
    server: ServerProcess, chain: Chain, control_server: Callable[[str], Address], version: ssl.TLSVersion
) -> None:
    forced = client_context(chain, lowest=version, highest=version)
    try:
        negotiated, _ = handshake(forced, control_server("full_chain"))
    except ssl.SSLError as error:
        pytest.skip(f"this OpenSSL cannot speak {version.name} even at @SECLEVEL=0: {error}")
    assert negotiated == version.name.replace("_", ".").replace("TLSv1.0", "TLSv1")  # the client can

    hello, reply = server_reply(forced, server.address)
    assert hello[:1] == HANDSHAKE_RECORD and hello[9:11] == CLIENT_VERSION[version]
    assert not reply.startswith(HANDSHAKE_RECORD), "the server answered with a ServerHello"
    with pytest.raises(ssl.SSLError):
        handshake(forced, server.address)

    capped = client_context(chain, lowest=version, highest=ssl.TLSVersion.TLSv1_2)
    assert handshake(capped, server.address) == ("TLSv1.2", "HTTP/1.1 200 OK")


@pytest.mark.parametrize("version", MODERN, ids=lambda version: version.name)
def test_accepts_tls_1_2_and_1_3(server: ServerProcess, chain: Chain, version: ssl.TLSVersion) -> None:
    context = client_context(chain, lowest=version, highest=version)
    assert handshake(context, server.address) == (version.name.replace("_", "."), "HTTP/1.1 200 OK")


@pytest.mark.parametrize("version", MODERN, ids=lambda version: version.name)
def test_serves_the_full_chain(
    server: ServerProcess, chain: Chain, control_server: Callable[[str], Address], version: ssl.TLSVersion
) -> None:
    """A client trusting only the root verifies the server: it must have sent the intermediate."""
    context = ssl.create_default_context(cafile=str(chain.root_path))
    context.minimum_version = context.maximum_version = version
    assert handshake(context, server.address)[1] == "HTTP/1.1 200 OK"
    # Control: the same client cannot verify a server that sends the certificate alone.
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        handshake(context, control_server("leaf_only"))


def test_tls_1_2_uses_no_legacy_cbc_sha1_suites(server: ServerProcess, chain: Chain) -> None:
    """A TLS 1.2 client offering only CBC + SHA-1 suites (what TLS 1.0 had) is refused."""
    legacy_suites = (
        "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA:@SECLEVEL=0"
    )
    context = client_context(
        chain, lowest=ssl.TLSVersion.TLSv1_2, highest=ssl.TLSVersion.TLSv1_2, ciphers=legacy_suites
    )
    assert not server_reply(context, server.address)[1].startswith(HANDSHAKE_RECORD)
    with pytest.raises(ssl.SSLError):
        handshake(context, server.address)
    # Control: the server does answer this client when it also offers AEAD suites.
    modern = client_context(
        chain,
        lowest=ssl.TLSVersion.TLSv1_2,
        highest=ssl.TLSVersion.TLSv1_2,
        ciphers="DEFAULT:" + legacy_suites,
    )
    assert server_reply(modern, server.address)[1].startswith(HANDSHAKE_RECORD)

"""A throw-away coturn (Debian's `turnserver`) on loopback, stopped by its PID.

    turn = start_turn(tmp_path)     # TURN REST API credentials from `turn.secret`
    ...                             # turn.url == "turn:127.0.0.1:PORT?transport=udp"
    turn.stop()

It relays between 127.0.0.1 addresses only (`--allow-loopback-peers`), so tests
need no network. Started from a thread inside a network namespace (as
tests/browser does), it lives in that namespace. `turn_or_skip` is the pytest
side: coturn missing or not starting is a failure in CI (`CI=true`), a skip
elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .support import free_port

TURNSERVER = os.environ.get("INBOX_TEST_TURNSERVER", "turnserver")
MIN_RELAY_PORT, MAX_RELAY_PORT = 49152, 49300
MAGIC_COOKIE = 0x2112A442


class TurnUnavailable(RuntimeError):
    """coturn is not installed or did not start."""


@dataclass
class TurnServer:
    process: subprocess.Popen[bytes]
    port: int
    secret: str
    directory: Path

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def credentials(self, username: str, ttl: int = 3600) -> tuple[str, str]:
        """TURN REST API credentials (what /ice-servers hands out): ("EXPIRY:USER", base64 HMAC-SHA1)."""
        user = f"{int(time.time()) + ttl}:{username}"
        digest = hmac.new(self.secret.encode(), user.encode(), hashlib.sha1).digest()
        return user, base64.b64encode(digest).decode()

    def log(self) -> str:
        path = self.directory / "turn.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def answers_stun(port: int, timeout: float = 0.2) -> bool:
    """Send one STUN Binding request; True when a Binding success response comes back in time."""
    transaction = secrets.token_bytes(12)
    request = b"\x00\x01\x00\x00" + MAGIC_COOKIE.to_bytes(4, "big") + transaction  # Binding, no attributes
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request, ("127.0.0.1", port))
            reply, _ = sock.recvfrom(2048)
        except OSError:  # nothing listening yet (ICMP refusal) or no answer within `timeout`
            return False
    return reply[:2] == b"\x01\x01" and reply[8:20] == transaction


def start_turn(directory: Path, secret: str | None = None, startup_timeout: float = 10.0) -> TurnServer:
    """Start coturn on a free UDP port with a shared secret; returns once it answers STUN."""
    if shutil.which(TURNSERVER) is None:
        raise TurnUnavailable(f"{TURNSERVER} not found (apt-get install coturn)")
    directory.mkdir(parents=True, exist_ok=True)
    secret = secret or secrets.token_hex(16)
    port = free_port()
    command = [
        TURNSERVER, "-n", "--no-cli", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
        "--listening-port", str(port), "--min-port", str(MIN_RELAY_PORT), "--max-port", str(MAX_RELAY_PORT),
        "--use-auth-secret", "--static-auth-secret", secret, "--realm", "test.local",
        "--allow-loopback-peers", "--no-tls", "--no-dtls", "--fingerprint", "--relay-threads", "1",
        "--userdb", str(directory / "turndb"), "--pidfile", str(directory / "turn.pid"),
        "--log-file", str(directory / "turn.log"), "--simple-log",
    ]  # fmt: skip
    with open(directory / "turn.out", "wb") as out:
        process = subprocess.Popen(command, cwd=directory, stdout=out, stderr=subprocess.STDOUT)
    turn = TurnServer(process, port, secret, directory)
    deadline = time.monotonic() + startup_timeout
    while not answers_stun(port):
        if process.poll() is not None or time.monotonic() > deadline:
            turn.stop()
            output = (directory / "turn.out").read_text(errors="replace") + turn.log()
            raise TurnUnavailable(f"coturn did not start (exit {process.returncode}):\n{output}")
    return turn


def turn_or_skip(directory: Path, secret: str | None = None) -> TurnServer:
    """`start_turn`, failing the test in CI and skipping it elsewhere when coturn cannot run."""
    try:
        return start_turn(directory, secret)
    except TurnUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))

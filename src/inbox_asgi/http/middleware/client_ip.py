"""Who is asking: the peer address, or the proxy's word for it when trusted."""

from __future__ import annotations

from starlette.types import Scope


def client_ip(scope: Scope, trust_proxy: bool) -> str:
    """The client's IP; with trust_proxy, the last X-Forwarded-For entry.

    The last entry is the one the trusted proxy appended itself; anything left
    of it came from the client and may be forged.
    """
    if trust_proxy:
        forwarded: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded = value  # several headers: the last one is the proxy's
        if forwarded:
            last = forwarded.rsplit(b",", 1)[-1].strip()
            if last:
                return last.decode("latin-1")
    client = scope.get("client")
    return str(client[0]) if client else "-"

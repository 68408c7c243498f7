"""Who is asking: the peer address, or the proxy's word for it when trusted."""

from __future__ import annotations

import ipaddress

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


def client_network(ip: str) -> str:
    """The unit one client is counted by: an IPv4 address, or the /64 of an IPv6 one.

    One IPv6 host commonly holds a whole /64, so counting addresses there would
    let a single client pass any per-client limit.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)

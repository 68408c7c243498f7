"""Who is asking: the peer address, or the proxy's word for it when trusted."""

from __future__ import annotations

import socket

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
    let a single client pass any per-client limit. inet_pton/inet_ntop rather
    than `ipaddress`, which takes ~20 µs per IPv6 address; no cache, so nothing a
    client sends (X-Forwarded-For) is kept.
    """
    if ":" not in ip:
        # An IPv4 address, already in its one canonical form; anything else is kept as it is.
        return ip
    try:
        packed = socket.inet_pton(socket.AF_INET6, ip.partition("%")[0])  # no zone id
    except (OSError, ValueError):
        return ip  # not an address: counted as itself
    if packed[:12] == _IPV4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


_IPV4_MAPPED = bytes(10) + b"\xff\xff"


def request_network(scope: Scope, trust_proxy: bool) -> str:
    """The requesting client's network for -max-inboxes-per-ip; empty when the server gives no peer."""
    ip = client_ip(scope, trust_proxy)
    return "" if ip == "-" else client_network(ip)

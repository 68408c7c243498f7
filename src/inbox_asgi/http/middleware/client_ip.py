"""Who is asking: the peer address, or the proxy's word for it when trusted."""

from __future__ import annotations

import functools
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
    if ":" not in ip:
        # Not IPv6: an IPv4 address is already in its one canonical form (ipaddress
        # refuses leading zeros), and anything else is returned as it is below too.
        # This skips the parse for nearly every request.
        return ip
    if len(ip) <= _LONGEST_CACHED:
        return _cached_ipv6_network(ip)
    return _ipv6_network(ip)


#: Longer strings are never cached (no real address with a zone id is this long), so the
#: cache holds at most its size times a short string, whatever X-Forwarded-For carries.
_LONGEST_CACHED = 64


def _ipv6_network(ip: str) -> str:
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


# An IPv6 address costs ~20 µs to reduce to its /64, more than the rest of a request;
# clients repeat their address, so a small bounded cache makes it a dict lookup.
_cached_ipv6_network = functools.lru_cache(maxsize=4096)(_ipv6_network)

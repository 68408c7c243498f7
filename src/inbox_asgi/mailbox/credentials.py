"""Who a request claims to be: a username and the password (or token) it gave."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Credentials:
    username: str
    password: str
    #: The client network the request came from (an IPv4 address, or the /64 of an
    #: IPv6 one), for -max-inboxes-per-ip; empty when unknown (no limit applies).
    network: str = ""

    @property
    def username_bytes(self) -> bytes:
        return self.username.encode()

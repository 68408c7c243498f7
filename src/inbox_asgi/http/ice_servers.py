"""GET /ice-servers: the STUN and TURN servers a peer should use, with fresh TURN credentials.

TURN credentials follow the TURN REST API that coturn checks with
`--use-auth-secret --static-auth-secret` (SPEC section 8): they are derived
from the caller's username, so the secret stays on the servers, and they
expire on their own, so nothing has to be revoked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.types import Receive, Scope, Send

from inbox_asgi.http.auth import Authenticator, authorization_header
from inbox_asgi.http.middleware.client_ip import request_network
from inbox_asgi.http.responses import send_error, send_response, send_text
from inbox_asgi.mailbox.errors import InboxError
from inbox_asgi.mailbox.interface import Mailbox
from inbox_asgi.tokens import turn_credential

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")


class IceServers:
    """The ICE server list for one user: STUN URLs as they are, TURN URLs with credentials."""

    def __init__(
        self,
        stun_urls: Sequence[str] = (),
        turn_urls: Sequence[str] = (),
        turn_secret: str | None = None,
        ttl: int = 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if turn_urls and not turn_secret:
            raise ValueError("TURN URLs need a secret to sign credentials with")
        self.stun_urls = list(stun_urls)
        self.turn_urls = list(turn_urls)
        self.turn_secret = turn_secret
        self.ttl = ttl
        self.clock = clock
        #: TURN credentials handed out (for /metrics).
        self.issued = 0

    def for_user(self, username: str) -> dict[str, Any]:
        servers: list[dict[str, Any]] = []
        if self.stun_urls:
            servers.append({"urls": self.stun_urls})
        if self.turn_urls and self.turn_secret:
            name, credential = turn_credential(self.turn_secret, username, self.ttl, now=self.clock())
            servers.append({"urls": self.turn_urls, "username": name, "credential": credential})
            self.issued += 1
        return {"iceServers": servers, "ttl": self.ttl if servers else 0}


class IceServersEndpoint:
    """Raw ASGI like /inbox, so a refusal is the same one-line answer from the same error table."""

    def __init__(
        self, ice_servers: IceServers, mailbox: Mailbox, authenticator: Authenticator, *, trust_proxy: bool
    ) -> None:
        self.ice_servers = ice_servers
        self.mailbox = mailbox
        self.authenticator = authenticator
        self.trust_proxy = trust_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "OPTIONS":
            await send_response(send, 204, [])
            return
        if method != "GET":
            await send_text(send, 405, "method not allowed", [(b"allow", b"GET, OPTIONS")])
            return
        try:
            header = authorization_header(scope["headers"])
            credentials = self.authenticator.credentials(header, request_network(scope, self.trust_proxy))
            # Authenticated like a POST's sender: the name is claimed (or its password checked).
            await self.mailbox.open(credentials)
        except InboxError as error:
            await send_error(send, error)
            return
        body = json.dumps(self.ice_servers.for_user(credentials.username), separators=(",", ":")).encode()
        await send_response(send, 200, [_JSON, _NO_STORE], body)

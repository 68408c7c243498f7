"""One logfmt line per request: grep-able, with the username and never the password."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inbox_asgi.http.auth import authorization_header, parse_authorization
from inbox_asgi.http.middleware.client_ip import client_ip
from inbox_asgi.mailbox.errors import BadCredentials, MalformedRequest

logger = logging.getLogger("inbox_asgi.access")


def _quote(value: str) -> str:
    """logfmt value: bare when safe, else double-quoted with control characters escaped."""
    if value and value.isprintable() and not any(c in value for c in ' "=\\'):
        return value
    escaped = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode()
        for c in value.replace("\\", "\\\\").replace('"', '\\"')
    )
    return f'"{escaped}"'


def _username(scope: Scope) -> str:
    """The user the endpoint acted as: `-` for none (no header, or two: refused), `?` if malformed."""
    try:
        header = authorization_header(scope["headers"])
    except MalformedRequest:
        return "-"
    if header is None:
        return "-"
    try:
        return parse_authorization(header).username
    except BadCredentials:
        return "?"


class AccessLog:
    def __init__(self, app: ASGIApp, *, trust_proxy: bool = False) -> None:
        self.app = app
        self.trust_proxy = trust_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        size = 0

        async def logging_send(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            logger.info(
                "client=%s method=%s path=%s%s user=%s status=%s bytes=%d ms=%.1f",
                _quote(client_ip(scope, self.trust_proxy)),
                _quote(scope["method"]),
                _quote(scope["path"]),
                f" query={_quote(query)}" if query else "",
                _quote(_username(scope)),
                status or "-",
                size,
                (time.perf_counter() - started) * 1000,
            )

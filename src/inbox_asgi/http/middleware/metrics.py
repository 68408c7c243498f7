"""Prometheus metrics (opt-in): mailbox gauges read at scrape time, requests by status."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inbox_asgi.http.auth import Authenticator
from inbox_asgi.http.ice_servers import IceServers
from inbox_asgi.mailbox.interface import Mailbox

ROUTES = ("/inbox", "/ice-servers", "/healthz", "/metrics")


class Metrics:
    def __init__(
        self,
        mailbox: Mailbox,
        authenticator: Authenticator | None = None,
        ice_servers: IceServers | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.authenticator = authenticator
        self.ice_servers = ice_servers
        # A registry per app, so several apps in one process (tests) do not collide.
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "inbox_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.inboxes = Gauge("inbox_inboxes", "inboxes held", registry=registry)
        self.waiting = Gauge("inbox_waiting_readers", "GETs waiting for a message", registry=registry)
        self.queued = Gauge("inbox_queued_messages", "messages waiting in inboxes", registry=registry)
        self.queued_bytes = Gauge(
            "inbox_queued_bytes",
            "bytes queued messages hold, as -max-queued-bytes counts them (0 in Redis mode)",
            registry=registry,
        )
        self.delivered = Counter("inbox_messages_delivered", "messages handed to readers", registry=registry)
        self.accepted = Counter("inbox_messages_accepted", "messages accepted (POST 200)", registry=registry)
        self.rejected = Counter(
            "inbox_messages_rejected", "messages refused, by status", ["status"], registry=registry
        )
        self.expired = Counter("inbox_inboxes_expired", "inboxes deleted for inactivity", registry=registry)
        self.tokens_refused = Counter(
            "inbox_tokens_refused", "requests refused for a bad or expired access token", registry=registry
        )
        self.ice_issued = Counter(
            "inbox_ice_credentials_issued", "TURN credentials handed out by /ice-servers", registry=registry
        )
        # What the counted sources had reached at the last scrape: counters only go up by the difference.
        self._expired_seen = self._refused_seen = self._issued_seen = 0

    async def endpoint(self, request: Request) -> Response:
        stats = await self.mailbox.stats()
        self.inboxes.set(stats.inboxes)
        self.waiting.set(stats.waiting_readers)
        self.queued.set(stats.queued_messages)
        self.queued_bytes.set(stats.queued_bytes)
        self.expired.inc(max(0, stats.expired_inboxes - self._expired_seen))
        self._expired_seen = stats.expired_inboxes
        if self.authenticator is not None:
            self.tokens_refused.inc(self.authenticator.tokens_refused - self._refused_seen)
            self._refused_seen = self.authenticator.tokens_refused
        if self.ice_servers is not None:
            self.ice_issued.inc(self.ice_servers.issued - self._issued_seen)
            self._issued_seen = self.ice_servers.issued
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def count_requests(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            path = scope["path"]
            route = path if path in ROUTES else "static"

            async def counting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    self.requests.labels(route, scope["method"], str(status)).inc()
                    if route == "/inbox":
                        self._count_message(scope["method"], status)
                await send(message)

            await app(scope, receive, counting_send)

        return count_requests

    def _count_message(self, method: str, status: int) -> None:
        if method == "GET" and status == 200:
            self.delivered.inc()
        elif method == "POST":
            if status == 200:
                self.accepted.inc()
            else:
                self.rejected.labels(str(status)).inc()

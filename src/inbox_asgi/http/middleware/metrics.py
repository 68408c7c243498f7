"""Prometheus metrics (opt-in): mailbox gauges read at scrape time, requests by status."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inbox_asgi.mailbox.interface import Mailbox


class Metrics:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
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
        self._expired_seen = 0

    async def endpoint(self, request: Request) -> Response:
        stats = await self.mailbox.stats()
        self.inboxes.set(stats.inboxes)
        self.waiting.set(stats.waiting_readers)
        self.queued.set(stats.queued_messages)
        self.queued_bytes.set(stats.queued_bytes)
        self.expired.inc(max(0, stats.expired_inboxes - self._expired_seen))
        self._expired_seen = stats.expired_inboxes
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def count_requests(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            path = scope["path"]
            route = path if path in ("/inbox", "/healthz", "/metrics") else "static"

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

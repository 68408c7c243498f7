"""Prometheus metrics (opt-in): mailbox gauges read at scrape time, requests by status."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .mailbox import Mailbox


class Metrics:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        # A registry per app, so several apps in one process (tests) do not collide.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "inbox_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.inboxes = Gauge("inbox_inboxes", "inboxes held", registry=self.registry)
        self.waiting = Gauge("inbox_waiting_readers", "GETs waiting for a message", registry=self.registry)
        self.queued = Gauge("inbox_queued_messages", "messages waiting in inboxes", registry=self.registry)

    async def endpoint(self, request: Request) -> Response:
        stats = await self.mailbox.stats()
        self.inboxes.set(stats.inboxes)
        self.waiting.set(stats.waiting_readers)
        self.queued.set(stats.queued_messages)
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
                    self.requests.labels(route, scope["method"], str(message["status"])).inc()
                await send(message)

            await app(scope, receive, counting_send)

        return count_requests

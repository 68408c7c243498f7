"""create_app: Settings in, a Starlette app out."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from inbox_asgi.config import Settings
from inbox_asgi.http.auth import Authenticator
from inbox_asgi.http.endpoint import InboxEndpoint
from inbox_asgi.http.ice_servers import IceServers, IceServersEndpoint
from inbox_asgi.http.middleware.access_log import AccessLog
from inbox_asgi.http.middleware.metrics import Metrics
from inbox_asgi.http.middleware.ratelimit import RateLimit, TokenBuckets
from inbox_asgi.http.openapi import openapi_endpoint
from inbox_asgi.http.static import PublicFiles, public_directory
from inbox_asgi.http.websocket import InboxSocketEndpoint
from inbox_asgi.mailbox.interface import Mailbox
from inbox_asgi.mailbox.memory import MemoryMailbox

logger = logging.getLogger("inbox_asgi")

#: The collector's thresholds while serving: young collections every 20 000 net allocations
#: instead of 700 (a parked request is a few dozen objects; with thousands waiting, each
#: young collection walked them all).
GC_THRESHOLD = (20_000, 10, 10)
#: -public's default: its absence is the normal case for an installed package, not a typo.
DEFAULT_PUBLIC = next(spec.default for spec in fields(Settings) if spec.name == "public")


def build_mailbox(settings: Settings) -> Mailbox:
    if settings.redis_url:
        from inbox_asgi.mailbox.redis.mailbox import RedisMailbox  # optional dependency

        return RedisMailbox.from_settings(settings)
    return MemoryMailbox(
        inbox_timeout=settings.inbox_timeout,
        inbox_capacity=settings.inbox_capacity,
        max_inboxes=settings.max_inboxes,
        cleanup_interval=settings.cleanup_interval,
        max_queued_bytes=settings.max_queued_bytes,
        max_inboxes_per_ip=settings.max_inboxes_per_ip,
    )


class InboxFirst(Starlette):
    """Starlette, except that /inbox and /inbox/ws skip the router: they are nearly every request.

    A request for exactly `/inbox` (or a WebSocket to exactly `/inbox/ws`) goes
    straight to its endpoint, through the user middleware (CORS, metrics) only,
    not through Starlette's error and exception middleware or the route table
    (uvicorn answers 500 if the endpoint ever raises). For an open socket that is
    also six coroutine frames less held, and no wrapper around every frame it
    sends. Everything else, including both under a root_path, takes the ordinary
    Starlette path, where the same endpoints are also routed.
    """

    def __init__(self, inbox: ASGIApp, sockets: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.endpoints = {("http", "/inbox"): inbox, ("websocket", "/inbox/ws"): sockets}
        self.stacks: dict[tuple[str, str], ASGIApp] = {}

    def build_stack(self, app: ASGIApp) -> ASGIApp:
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = (scope["type"], scope.get("path"))
        if key in self.endpoints and not scope.get("root_path"):
            stack = self.stacks.get(key)
            if stack is None:
                stack = self.stacks[key] = self.build_stack(self.endpoints[key])
            await stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, mailbox: Mailbox | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    mailbox = mailbox or build_mailbox(settings)
    authenticator = Authenticator(settings.auth_secrets())
    inbox: ASGIApp = InboxEndpoint(
        mailbox,
        long_poll_wait=settings.long_poll_wait,
        max_body_size=settings.max_body_size,
        trust_proxy=settings.trust_proxy,
        authenticator=authenticator,
    )
    turn_secrets = settings.turn_secrets()
    ice_servers = IceServers(
        settings.stun_urls, settings.turn_urls, turn_secrets[0] if turn_secrets else None, settings.turn_ttl
    )
    ice: ASGIApp = IceServersEndpoint(ice_servers, mailbox, authenticator, trust_proxy=settings.trust_proxy)
    buckets = None
    if settings.rate_limit:
        # One budget per client across all three: /ice-servers claims names and signs credentials too.
        buckets = TokenBuckets(settings.rate_limit, settings.rate_burst)
        inbox = RateLimit(inbox, buckets, trust_proxy=settings.trust_proxy)
        ice = RateLimit(ice, buckets, trust_proxy=settings.trust_proxy)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n", headers={"cache-control": "no-store"})

    # The push transport (SPEC section 9); both backends have sockets (a Mailbox without them gets 1011).
    sockets = InboxSocketEndpoint(
        mailbox,
        authenticator=authenticator,
        max_body_size=settings.max_body_size,
        auth_timeout=settings.header_timeout,
        trust_proxy=settings.trust_proxy,
        buckets=buckets,
        origins=settings.cors,
    )
    routes: list[BaseRoute] = [
        Route("/inbox", inbox),
        WebSocketRoute("/inbox/ws", sockets),
        Route("/ice-servers", ice),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    routes.append(Route("/openapi.json", openapi_endpoint, methods=["GET"]))
    middleware = []
    if settings.access_log:
        middleware.append(Middleware(AccessLog, trust_proxy=settings.trust_proxy))
    metrics = None
    if settings.metrics:
        metrics = Metrics(mailbox, authenticator, ice_servers)
        routes.append(Route("/metrics", metrics.endpoint, methods=["GET"]))
        middleware.append(Middleware(metrics.middleware))
    if settings.cors:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=["X-From", "Retry-After"],
                max_age=600,
            )
        )
    public = public_directory(settings.public, warn_if_missing=settings.public != DEFAULT_PUBLIC)
    routes.append(Mount("/", app=PublicFiles(public)))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        restore_signals = _answer_readers_on_signal(mailbox.shutdown)
        # Everything alive now (modules, the app) lives as long as the process: moved out
        # of the collector's generations, full collections walk only what requests made.
        # Measured: ~2 µs less user CPU per pairs request (docs/performance.md).
        gc.collect()
        gc.freeze()
        # A closed connection leaves no reference cycle (server/protocol.py breaks uvicorn's),
        # so the young generation can be collected far less often: parked requests are
        # walked by every young collection. Measured: docs/performance.md.
        gc.set_threshold(*GC_THRESHOLD)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(mailbox.run)
                yield
                mailbox.shutdown()
                tasks.cancel_scope.cancel()
        finally:
            restore_signals()
            await mailbox.aclose()

    app = InboxFirst(inbox, sockets, routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.settings = settings
    app.state.mailbox = mailbox
    return app


def _answer_readers_on_signal(shutdown: Callable[[], None]) -> Callable[[], None]:
    """Chain onto the server's SIGINT/SIGTERM handlers so waiting readers get 204 at once.

    uvicorn waits for in-flight requests before it runs the lifespan shutdown,
    and a long poll is an in-flight request: without this a stop would take
    up to the long-poll timeout.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous_handlers = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue  # no server handler to chain onto (e.g. default SIGINT)

        def handler(number: int, frame: object, previous: Callable[..., object] = previous) -> None:
            loop.call_soon_threadsafe(shutdown)
            previous(number, frame)

        previous_handlers[signum] = previous
        signal.signal(signum, handler)

    def restore() -> None:
        for number, previous in previous_handlers.items():
            signal.signal(number, previous)

    return restore

"""Per-client-IP request rate limit for /inbox (token buckets), off unless -rate-limit is set."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from inbox_asgi.http.middleware.client_ip import client_ip
from inbox_asgi.http.responses import send_error
from inbox_asgi.mailbox.errors import RateLimited

#: Seconds between sweeps of idle buckets, so memory follows active clients only.
SWEEP_INTERVAL = 10.0


class TokenBuckets:
    """`rate` tokens per second per key, holding at most `burst`."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)
        self._next_sweep = clock() + SWEEP_INTERVAL

    def take(self, key: str) -> float:
        """0 if the request may go ahead, else the seconds until it may."""
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep(now)
        tokens, updated = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        refill = self.burst / self.rate  # an idle bucket is full again after this
        self._buckets = {
            key: (tokens, updated)
            for key, (tokens, updated) in self._buckets.items()
            if now - updated < refill
        }
        self._next_sweep = now + SWEEP_INTERVAL


class RateLimit:
    """ASGI wrapper answering 429 with Retry-After to clients over their rate."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets, *, trust_proxy: bool) -> None:
        self.app = app
        self.buckets = buckets
        self.trust_proxy = trust_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wait = self.buckets.take(client_ip(scope, self.trust_proxy))
        if wait:
            await send_error(send, RateLimited(), retry_after=math.ceil(wait))
            return
        await self.app(scope, receive, send)

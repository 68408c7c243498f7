"""Connecting to Redis: a bounded client, and the start-up check that Redis will do."""

from __future__ import annotations

import logging
import re
from typing import Any

from inbox_asgi.config import ConfigError, redact
from inbox_asgi.mailbox.redis.scripts import SCRIPTS

try:
    import redis
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ConfigError("-redis-url needs the redis package: pip install 'inbox-asgi[redis]'") from error

#: Seconds any one Redis command may take before the request gets 503.
SOCKET_TIMEOUT = 2.0
#: ZADD ... GT (index scores) and effect replication of scripts that read TIME.
MIN_REDIS_VERSION = (6, 2)
#: Most Redis connections one process opens (plus its subscription).
MAX_CONNECTIONS = 64

logger = logging.getLogger("inbox_asgi.redis")


def connect(url: str) -> aioredis.Redis:
    """A client with a bounded pool, bounded waits and no automatic retries.

    Waiting readers hold no connection; a request holds one for one round
    trip, and at most MAX_CONNECTIONS are open per process. A retried script
    could run twice (a message popped by the first run would be lost), so a
    failed command fails its request with 503 instead; idle connections are
    dropped as soon as a loss is noticed, so none that died with Redis is
    used after it comes back. URL query parameters (``?socket_timeout=5``)
    override these settings.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=SOCKET_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)


def check_connection(url: str, timeout: float = 3.0) -> None:
    """At start-up: Redis answers and accepts our scripts, or a ConfigError says why not."""
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        )
    except ValueError as error:
        raise ConfigError(f"-redis-url: {error}") from None
    try:
        with client:
            version = str(client.info("server").get("redis_version", "0"))
            memory = client.info("memory")
            for script in SCRIPTS:
                client.script_load(script.source)
    except RedisError as error:
        raise ConfigError(
            f"-redis-url: cannot use Redis at {redact(url)}: {error}. "
            "Start Redis (or fix the URL), or run without -redis-url for the in-memory mode."
        ) from None
    if tuple(int(part) for part in re.findall(r"\d+", version)[:2]) < MIN_REDIS_VERSION:
        raise ConfigError(
            f"-redis-url: Redis {version} at {redact(url)} is too old: inbox-asgi needs Redis "
            f"{'.'.join(map(str, MIN_REDIS_VERSION))} or later"
        )
    warn_about_memory(memory)


def warn_about_memory(memory: dict[str, Any]) -> None:
    """Warn when Redis cannot bound queued messages (in Redis mode maxmemory does, not -max-queued-bytes)."""
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if not int(memory.get("maxmemory", 0)):
        logger.warning(
            "Redis has no maxmemory: in Redis mode nothing bounds the bytes of queued messages "
            "(-max-queued-bytes applies to the in-memory mode); "
            "set maxmemory, with maxmemory-policy noeviction"
        )
    elif policy != "noeviction":
        logger.warning(
            "Redis evicts keys when full (maxmemory-policy %s): inboxes and accepted messages can be lost; "
            "use maxmemory-policy noeviction (new messages then get 503 when Redis is full)",
            policy,
        )

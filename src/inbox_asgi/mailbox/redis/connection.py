"""Connecting to Redis: the store a process uses, and the start-up check that Redis will do."""

from __future__ import annotations

import logging
import re
from typing import Any

from inbox_asgi.config import ConfigError, redact
from inbox_asgi.mailbox.redis.scripts import SCRIPTS

try:
    import hiredis  # noqa: F401  (the store parses replies with it)
    import redis
    import redis.cluster
    from redis.exceptions import RedisError

    from inbox_asgi.mailbox.redis.store import Store
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "-redis-url needs the redis and hiredis packages: pip install 'inbox-asgi[redis]'"
    ) from error

#: ZADD ... GT (index scores) and effect replication of scripts that read TIME.
MIN_REDIS_VERSION = (6, 2)
#: A Redis Cluster also needs sharded pub/sub (SPUBLISH, SSUBSCRIBE) for wake-ups.
MIN_CLUSTER_VERSION = (7, 0)

logger = logging.getLogger("inbox_asgi.redis")


def connect(url: str) -> Store:
    """The store for `url`: one Redis server, or a Redis Cluster (found out on the first connection).

    One auto-pipelined connection per Redis node, and no automatic retries: a
    retried script could run twice (a message popped by the first run would
    be lost), so a failed command fails its request with 503 instead. URL
    query parameters (``?socket_timeout=5``) set the timeouts (2 s by default).
    """
    return Store.from_url(url, [script.source for script in SCRIPTS])


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
            nodes = [client]
            cluster = bool(int(client.info("cluster").get("cluster_enabled", 0)))
            if cluster:
                nodes = _primaries(url, timeout)
            for node in nodes:
                for script in SCRIPTS:
                    node.script_load(script.source)
    except RedisError as error:
        raise ConfigError(
            f"-redis-url: cannot use Redis at {redact(url)}: {error}. "
            "Start Redis (or fix the URL), or run without -redis-url for the in-memory mode."
        ) from None
    needed = MIN_CLUSTER_VERSION if cluster else MIN_REDIS_VERSION
    if tuple(int(part) for part in re.findall(r"\d+", version)[:2]) < needed:
        raise ConfigError(
            f"-redis-url: Redis {version} at {redact(url)} is too old: inbox-asgi needs Redis "
            f"{'.'.join(map(str, needed))} or later{' for a Cluster' if cluster else ''}"
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


def _primaries(url: str, timeout: float) -> list[redis.Redis]:
    """A client for each primary of the cluster whose node `url` names (same credentials and TLS)."""
    cluster = redis.cluster.RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    return [cluster.get_redis_connection(node) for node in cluster.get_primaries()]  # type: ignore[no-untyped-call]

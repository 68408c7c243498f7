"""Fixtures of the Redis backend's tests: the session's Redis Cluster, and `backend` set to it.

Overriding `backend` here makes every protocol test imported into this
directory (test_cluster_protocol.py) run against the cluster.
"""

from __future__ import annotations

from typing import Any

import pytest

from ...redis_support import RedisCluster, own_cluster, redis_cluster

__all__ = ["own_cluster", "redis_cluster"]


@pytest.fixture(params=["cluster"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for the session's 3-node Redis Cluster (emptied first), through one of its nodes."""
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return {"redis_url": cluster.url}

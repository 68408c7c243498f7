"""The whole wire-protocol suite (tests/test_wire_protocol.py) against a 3-node Redis Cluster.

The tests are the same functions; this directory's `backend` fixture
(conftest.py) points them at the cluster instead of memory and one Redis.
"""

from __future__ import annotations

from ...test_wire_protocol import *  # noqa: F403

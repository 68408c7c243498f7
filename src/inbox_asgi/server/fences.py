"""What inbox-asgi's protocols need of uvicorn, checked once per process.

uvicorn runs any `http` protocol class built as its own are: called with the
Config, the ServerState and the lifespan state, and sharing that state's
connections, tasks and default headers. Those names are not a documented API,
so `probe` looks for them on a real Config and ServerState before the CLI
hands uvicorn inbox-asgi's protocol. If any is gone, uvicorn serves with its
own httptools protocol (one warning says so): slower, and without the head and
body limits of server/protocol.py, but never a 500. pyproject pins uvicorn to
the minor these names were checked against.
"""

from __future__ import annotations

import inspect
import logging

import uvicorn
from uvicorn.server import ServerState

logger = logging.getLogger("inbox_asgi")

#: What the protocols read on uvicorn's Config.
CONFIG_ATTRIBUTES = (
    "loaded",
    "load",
    "loaded_app",
    "root_path",
    "timeout_keep_alive",
    "ws_max_size",
    "ws_ping_interval",
    "ws_ping_timeout",
)
#: What they read or update on uvicorn's ServerState.
STATE_ATTRIBUTES = ("connections", "tasks", "default_headers", "total_requests")
#: How uvicorn's server builds a protocol (its own protocols' parameters).
PROTOCOL_PARAMETERS = ("config", "server_state", "app_state", "_loop")


def probe() -> tuple[str, ...]:
    """The names inbox-asgi's protocols need that the installed uvicorn lacks (none: use them)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    missing: list[str] = []
    config = uvicorn.Config(app=_nothing, lifespan="off", log_config=None)
    try:
        config.load()  # sets loaded_app
    except Exception:
        missing.append("Config.load()")
    missing += [f"Config.{name}" for name in CONFIG_ATTRIBUTES if not hasattr(config, name)]
    state = ServerState()
    missing += [f"ServerState.{name}" for name in STATE_ATTRIBUTES if not hasattr(state, name)]
    parameters = inspect.signature(HttpToolsProtocol).parameters
    missing += [f"protocol parameter {name}" for name in PROTOCOL_PARAMETERS if name not in parameters]
    return tuple(missing)


def http_protocol(own: type) -> type | str:
    """`own` if uvicorn still offers what it needs, else uvicorn's httptools protocol (warned)."""
    missing = probe()
    if not missing:
        return own
    logger.warning(
        "uvicorn %s lacks %s: serving with uvicorn's own httptools protocol, without"
        " inbox-asgi's head and body limits and fast paths",
        uvicorn.__version__,
        ", ".join(missing),
    )
    return "httptools"


async def _nothing(scope: object, receive: object, send: object) -> None:
    """An app for the throw-away Config `probe` builds."""

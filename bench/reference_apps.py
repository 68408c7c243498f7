"""The two reference apps the benchmarks compare inbox-asgi with, and how to serve them.

Both answer every request to /inbox with an empty 200 and do nothing else:

* `raw_app`: the smallest raw ASGI callable — the floor any ASGI app on this
  uvicorn can reach;
* `starlette_app()`: the smallest Starlette app with one `Route("/inbox")`.

`python bench/reference_apps.py raw|starlette PORT` serves one with exactly the
uvicorn settings `inbox-asgi` uses (httptools with the same head-limit protocol
class, uvloop, no access log, no server header, lifespan on), so a ratio
measures the app, not the server configuration.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from inbox_asgi.cli import HEAD_TIMEOUT
from inbox_asgi.protocol import limited_protocol

_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
_BODY = {"type": "http.response.body", "body": b""}


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send(_START)
        await send(_BODY)
    elif scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def starlette_app() -> Starlette:
    async def inbox(request: Request) -> Response:
        return Response()

    return Starlette(routes=[Route("/inbox", inbox, methods=["GET", "POST"])])


APPS = {"raw": "reference_apps:raw_app", "starlette": "reference_apps:starlette_app"}


def serve(kind: str, port: int) -> None:
    """Run one reference app on 127.0.0.1:port with inbox-asgi's uvicorn settings (see cli.run)."""
    uvicorn.run(
        APPS[kind],
        factory=kind == "starlette",
        host="127.0.0.1",
        port=port,
        http=limited_protocol(1048576, HEAD_TIMEOUT),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
        log_config=None,
    )


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))

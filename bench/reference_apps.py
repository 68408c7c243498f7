"""The two reference apps the benchmarks compare inbox-asgi with, and how to serve them.

Both answer every request to /inbox with an empty 200 and do nothing else:

* `raw_app`: the smallest raw ASGI callable — the floor any ASGI app on this
  uvicorn can reach;
* `starlette_app()`: the smallest Starlette app with one `Route("/inbox")`.

`python bench/reference_apps.py raw|starlette PORT` serves one with exactly the
keyword arguments `inbox-asgi -https=false -bind 127.0.0.1:PORT -log-level
warning` passes to `uvicorn.run` (the same protocol class with its head
limits, keep-alive, proxy-header and logging settings), captured from the CLI
itself, so a ratio measures the app and nothing else.
"""

from __future__ import annotations

import sys
from typing import Any
from unittest import mock

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from inbox_asgi import cli

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


def inbox_asgi_options(port: int) -> dict[str, Any]:
    """What `inbox-asgi` would pass to uvicorn.run, apart from the app."""
    captured: dict[str, Any] = {}

    def capture(app: str, **options: Any) -> None:
        captured.update(options)

    flags = ["-https=false", "-bind", f"127.0.0.1:{port}", "-log-level", "warning"]
    with mock.patch.object(uvicorn, "run", capture):
        cli.run(cli.parse_settings(flags))
    return captured


def serve(kind: str, port: int) -> None:
    options = inbox_asgi_options(port)
    options["factory"] = kind == "starlette"
    uvicorn.run(APPS[kind], **options)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))

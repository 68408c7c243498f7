"""CPU cost per request without the network: uvicorn's protocol and the app, in-process.

    .venv/bin/python bench/app_cost.py                  # µs per request (jitters on a busy machine)
    .venv/bin/python bench/app_cost.py --profile        # where inbox-asgi's requests spend it
    .venv/bin/python bench/app_cost.py --instructions   # instructions per request (valgrind; stable)
    .venv/bin/python bench/app_cost.py --layer asgi ... # the app alone, without uvicorn

Replays the pairs stream (POST as s_i to r_i, then GET as r_i) into the three
apps — inbox-asgi, the raw ASGI and the Starlette reference — through the very
protocol class and uvicorn settings `inbox-asgi` runs with (`--layer uvicorn`,
the default): raw request bytes go into the protocol's `data_received`, the
response bytes go to a transport that keeps them. Only the kernel's socket work
and the event loop's polling are left out, so the rows differ by exactly what
serving the request costs in Python, and a change to the hot path can be judged
without a load generator. `--layer asgi` calls the ASGI apps directly.

On a busy machine timings jitter by ±30 %; `--instructions` counts the CPU
instructions each app executes per request under valgrind (callgrind), which
does not depend on what else runs: each app runs twice, with N and 2N
requests, and the difference is divided by N, so start-up cancels out.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import email.utils
import os
import pstats
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from reference_apps import inbox_asgi_options, raw_app, starlette_app
from scenarios.pairs import pairs_requests
from uvicorn.server import ServerState

from inbox_asgi.app import create_app
from inbox_asgi.config import Settings

ROOT = Path(__file__).resolve().parents[1]
APPS = ["raw-asgi", "starlette", "inbox-asgi"]
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Transport(asyncio.Transport):
    """Keeps what the server writes; counts complete responses."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 3000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise RuntimeError("the server closed the connection")


class UvicornDriver:
    """One keep-alive connection into the protocol class inbox-asgi runs with."""

    def __init__(self, app: App) -> None:
        options = inbox_asgi_options(3000)
        options.pop("factory")
        config = uvicorn.Config(app, **options)
        config.load()
        state = ServerState()
        state.default_headers = [(b"date", email.utils.formatdate(usegmt=True).encode())]
        self.protocol = config.http_protocol_class(config=config, server_state=state, app_state={})
        self.transport = Transport()
        self.protocol.connection_made(self.transport)

    async def request(self, raw: bytes) -> None:
        self.protocol.data_received(raw)
        cycle = self.protocol.cycle
        while not cycle.response_complete:
            await asyncio.sleep(0)
        self.transport.written.clear()


class AsgiDriver:
    """Calls the ASGI app directly with the scope uvicorn would build."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def request(self, raw: bytes) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method, target, _ = lines[0].decode().split(" ")
        path, _, query = target.partition("?")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            headers.append((name.lower(), value))
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
            "server": ("127.0.0.1", 3000), "client": ("127.0.0.1", 50000), "scheme": "http",
            "method": method, "root_path": "", "path": path, "raw_path": path.encode(),
            "query_string": query.encode(), "headers": headers, "state": {},
        }  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            pass

        await self.app(scope, receive, send)


async def measure(driver: UvicornDriver | AsgiDriver, requests: int) -> float:
    """Microseconds per request over `requests` requests of the pairs stream."""
    stream, create = pairs_requests()
    for raw in create:
        await driver.request(raw)
    started = time.perf_counter()
    for n in range(requests):
        await driver.request(stream[n % len(stream)])
    return (time.perf_counter() - started) * 1e6 / requests


async def main(layer: str, requests: int, profile: bool, only: str | None = None) -> None:
    # Every request comes from one address: thousands of peers that -max-inboxes-per-ip would refuse.
    inbox = create_app(Settings(long_polling=False, max_inboxes_per_ip=0, public=str(ROOT / "public")))
    async with inbox.router.lifespan_context(inbox):
        apps: dict[str, App] = {"raw-asgi": raw_app, "starlette": starlette_app(), "inbox-asgi": inbox}
        make = UvicornDriver if layer == "uvicorn" else AsgiDriver
        if only is not None:  # one pass, for --instructions
            await measure(make(apps[only]), requests)
            return
        for name, app in apps.items():
            driver = make(app)
            await measure(driver, requests // 5)  # warm-up
            best = min([await measure(driver, requests) for _ in range(5)])
            print(f"{name:>12}: {best:6.2f} µs per request")
        if profile:
            profiler = cProfile.Profile()
            driver = make(inbox)
            profiler.enable()
            await measure(driver, requests)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def instructions(layer: str, name: str, requests: int) -> int:
    """Instructions executed by a run of `requests` requests of one app, under callgrind."""
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, __file__, "--layer", layer, "--only", name, "--requests", str(requests),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stderr
    return int(re.search(r"Collected : (\d+)", output)[1])  # type: ignore[index]


def count_instructions(layer: str, requests: int, names: list[str]) -> dict[str, float]:
    counts = {}
    for name in names:
        counts[name] = (
            instructions(layer, name, 2 * requests) - instructions(layer, name, requests)
        ) / requests
        print(f"{name:>12}: {counts[name]:8.0f} instructions per request", flush=True)
    if "raw-asgi" in counts and "inbox-asgi" in counts:
        print(f"inbox-asgi costs {counts['inbox-asgi'] / counts['raw-asgi']:.2f}x raw-asgi")
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layer", choices=["uvicorn", "asgi"], default="uvicorn")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--instructions", nargs="*", choices=APPS, metavar="APP", help="count instructions under valgrind"
    )
    parser.add_argument("--only", choices=APPS, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.instructions is not None:
        count_instructions(options.layer, min(options.requests, 2000), options.instructions or APPS)
    else:
        uvloop.run(main(options.layer, options.requests, options.profile, options.only))

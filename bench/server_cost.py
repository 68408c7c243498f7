"""Instructions per request of a whole server process (uvicorn + app), counted by valgrind.

    .venv/bin/python bench/server_cost.py [--requests 4000]

On a shared 2-core machine req/s and even CPU time per request move by ±30 %
from one run to the next with whatever else is running. The number of
instructions the server process executes per request does not: this runs each
server (inbox-asgi, the raw ASGI and Starlette references) under callgrind,
sends the pairs stream (POST as s_i to r_i, then GET as r_i) over 8 keep-alive
connections, and reads the instruction counter before and after N requests.
What the kernel does for the sockets is not counted (it is the same for every
server, apart from inbox-asgi's responses that carry a message body).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from client import Connection
from harness import BENCH, VENV_BIN, free_port
from scenarios.pairs import pairs_requests


def callgrind_total(pid: int) -> int:
    """Dump the running callgrind's counters and return the instructions so far."""
    output = subprocess.run(
        ["callgrind_control", "--dump", str(pid)], capture_output=True, text=True, check=True
    ).stdout
    if "Error" in output:
        raise RuntimeError(output)
    dumps = sorted(Path(DUMPS.name).glob("callgrind.out.*"), key=lambda path: path.stat().st_mtime)
    total = 0
    for path in dumps:  # every dump holds the counts since the previous one
        match = re.search(r"^summary: (\d+)", path.read_text(errors="replace"), re.MULTILINE)
        total += int(match[1]) if match else 0
    return total


async def replay(port: int, stream: list[bytes], count: int, connections: int = 8) -> None:
    pool = [await Connection.open(port) for _ in range(connections)]

    async def worker(index: int) -> None:
        for n in range(index, count, connections):
            response = await pool[index].request(stream[n % len(stream)])
            if response.status not in (200, 204):
                raise RuntimeError(f"got {response.status}")

    await asyncio.gather(*(worker(i) for i in range(connections)))
    for connection in pool:
        connection.close()


def measure(name: str, argv: list[str], port: int, requests: int) -> float:
    stream, create = pairs_requests()
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={DUMPS.name}/callgrind.out.%p", *argv],
        stdout=LOG,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(BENCH), "PYTHONHASHSEED": "0"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                asyncio.run(replay(port, create, len(create)))
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    print((Path(DUMPS.name) / "server.log").read_text()[-3000:])
                    raise
                time.sleep(1)
        asyncio.run(replay(port, stream, 2000))  # warm-up
        before = callgrind_total(process.pid)
        asyncio.run(replay(port, stream, requests))
        after = callgrind_total(process.pid)
    finally:
        process.terminate()
        process.wait(60)
        for path in Path(DUMPS.name).glob("callgrind.out.*"):
            path.unlink()
    return (after - before) / requests


DUMPS = tempfile.TemporaryDirectory(prefix="bench-callgrind-")
LOG = open(Path(DUMPS.name) / "server.log", "wb")  # noqa: SIM115


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("servers", nargs="*", default=["inbox-asgi", "raw-asgi", "starlette"])
    args = parser.parse_args()
    results = {}
    for name in args.servers:
        port = free_port()
        if name == "inbox-asgi":
            argv = [str(VENV_BIN / "inbox-asgi"), "-https=false", "-bind", f"127.0.0.1:{port}",
                    "-log-level", "warning", "-long-polling=false", "-max-inboxes-per-ip", "0"]  # fmt: skip
        else:
            kind = "raw" if name == "raw-asgi" else "starlette"
            argv = [sys.executable, str(BENCH / "reference_apps.py"), kind, str(port)]
        results[name] = measure(name, argv, port, args.requests)
        print(f"{name:>12}: {results[name]:8.0f} instructions per request", flush=True)
    if "inbox-asgi" in results and "raw-asgi" in results:
        print(f"raw-asgi ÷ inbox-asgi: {results['raw-asgi'] / results['inbox-asgi']:.2f}")


if __name__ == "__main__":
    main()

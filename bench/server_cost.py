"""Instructions per request of a whole server process (uvicorn + app), counted by valgrind.

    .venv/bin/python bench/server_cost.py [--requests 4000]
    .venv/bin/python bench/server_cost.py --ping-pong 10 inbox-asgi   # per long-poll round trip too

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

from client import Connection, build
from harness import BENCH, JSON, VENV_BIN, free_port
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


async def ping_pong(port: int, pairs: int, round_trips: int) -> None:
    """`round_trips` long-poll round trips over `pairs` pairs (bench/scenarios/ping_pong.py's pattern).

    Each peer parks a GET, the `a` side posts a ping, `b` answers it at once; every pair
    does its share of round trips, then both sides stop.
    """
    each = round_trips // pairs

    async def pair(index: int) -> None:
        a, b = f"a{index}", f"b{index}"
        readers = {me: await Connection.open(port) for me in (a, b)}
        writers = {me: await Connection.open(port) for me in (a, b)}
        polls = {me: build("GET", "/inbox", me) for me in (a, b)}
        for me in (a, b):  # both inboxes exist before anything is sent
            await writers[me].request(build("POST", f"/inbox?to={me}", me, b"", JSON))
            await readers[me].request(polls[me])
        pending = {me: readers[me].send(polls[me]) for me in (a, b)}

        async def post(me: str, to: str) -> None:
            response = await writers[me].request(build("POST", f"/inbox?to={to}", me, b"{}", JSON))
            assert response.status == 200, response.status

        for _ in range(each):
            await post(a, b)
            for me, other in ((b, a), (a, None)):
                while (await pending[me]).status == 204:
                    pending[me] = readers[me].send(polls[me])
                pending[me] = readers[me].send(polls[me])
                if other:
                    await post(me, other)
        for future in pending.values():
            future.cancel()  # the last polls: answered by nobody, closed with their connections
        for connection in (*readers.values(), *writers.values()):
            connection.close()

    await asyncio.gather(*(pair(i) for i in range(pairs)))


def measure(name: str, argv: list[str], port: int, requests: int, pairs: int = 0) -> float:
    """Instructions per pairs request, or with `pairs` per ping-pong round trip."""
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
                # Creates the inboxes (and waits for the server); its GETs would park with long polls on.
                asyncio.run(ping_pong(port, pairs, pairs) if pairs else replay(port, create, len(create)))
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    print((Path(DUMPS.name) / "server.log").read_text()[-3000:])
                    raise
                time.sleep(1)
        if pairs:
            asyncio.run(ping_pong(port, pairs, 500))  # warm-up
            before = callgrind_total(process.pid)
            asyncio.run(ping_pong(port, pairs, requests))
        else:
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
    parser.add_argument(
        "--ping-pong", type=int, default=0, metavar="PAIRS",
        help="inbox-asgi also per long-poll round trip (--requests of them), against 4 pairs requests",
    )  # fmt: skip
    parser.add_argument("servers", nargs="*", default=["inbox-asgi", "raw-asgi", "starlette"])
    args = parser.parse_args()
    if args.ping_pong:
        port = free_port()
        argv = [str(VENV_BIN / "inbox-asgi"), "-https=false", "-bind", f"127.0.0.1:{port}", "-log-level",
                "warning", "-long-polling-timeout", "300", "-max-inboxes-per-ip", "0"]  # fmt: skip
        round_trip = measure("inbox-asgi", argv, port, args.requests, pairs=args.ping_pong)
        print(f"  inbox-asgi: {round_trip:8.0f} instructions per ping-pong round trip", flush=True)
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
    if args.ping_pong and "inbox-asgi" in results:
        print(f"round trip ÷ 4 pairs requests: {round_trip / (4 * results['inbox-asgi']):.2f}")


if __name__ == "__main__":
    main()

"""3. ping-pong: peer pairs answering each other at once through long polls.

A round trip is 2 POSTs and 2 long-poll GETs; the client is this Python process (uvloop) on
CPU 1. inbox-asgi and, with --go, the Go original (and with --redis, inbox-asgi on a Redis of
its own, whose wake-ups go through pub/sub; its CPU counts redis-server's) run side by side and
are loaded in turn (A B C, B C A, ...) for every pair count; the table gives medians, ratios to
Go from the same run, and the client's own CPU share, so a client-bound figure shows as one.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from client import Connection, build
from harness import JSON, Server, free_port, go_server, inbox_server, percentile, pin_client, run_loop, save

from scenarios.redis import answers, start_redis, wait_for, with_redis


async def ping_pong(port: int, pairs: int, seconds: float) -> dict[str, Any]:
    """Each pair: a sends a ping to b, b answers at once, a times the round trip and pings again."""
    round_trips: list[float] = []
    stop_at = 0.0

    async def peer(me: str, other: str, starts: bool) -> None:
        reader, writer = await Connection.open(port), await Connection.open(port)
        poll = build("GET", "/inbox", me)
        pending = reader.send(poll)  # creates my inbox, then waits for a message
        await ready.wait()

        async def post(text: bytes) -> None:
            response = await writer.request(build("POST", f"/inbox?to={other}", me, text, JSON))
            if response.status != 200:
                raise RuntimeError(f"POST got {response.status}")

        if starts:
            await post(b"%f" % time.monotonic())
        while True:
            response = await pending
            if time.monotonic() >= stop_at:
                break
            pending = reader.send(poll)  # poll again at once, as a signaling client does
            if response.status == 204:
                continue
            if response.status != 200:
                raise RuntimeError(f"GET got {response.status}")
            if starts:
                round_trips.append(time.monotonic() - float(response.body))
                await post(b"%f" % time.monotonic())
            else:
                await post(response.body)
        reader.close(reset=True)
        writer.close(reset=True)

    ready = asyncio.Event()
    tasks = []
    for i in range(pairs):
        tasks.append(asyncio.create_task(peer(f"a{i}", f"b{i}", True)))
        tasks.append(asyncio.create_task(peer(f"b{i}", f"a{i}", False)))
    await asyncio.sleep(1)  # every peer has created its inbox
    started = time.monotonic()
    stop_at = started + seconds
    ready.set()
    # Every peer stops at its first answer after stop_at; one whose partner stopped first
    # waits out its long poll, so cut those short.
    done, pending = await asyncio.wait(tasks, timeout=seconds + 2)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()
    return rtt_figures(pairs, round_trips, seconds)


def rtt_figures(pairs: int, round_trips: list[float], seconds: float) -> dict[str, Any]:
    """Round trips per second and RTT percentiles of one run (also bench/scenarios/sockets.py's)."""
    rtts = sorted(round_trips)
    return {
        "pairs": pairs,
        "round_trips": len(rtts),
        "round_trips_per_s": len(rtts) / seconds,
        "p50_ms": percentile(rtts, 50) * 1000,
        "p99_ms": percentile(rtts, 99) * 1000,
        "max_ms": rtts[-1] * 1000 if rtts else 0.0,
    }


def measure_run(server: Server, run: Coroutine[Any, Any, dict[str, Any]], wall: float) -> dict[str, Any]:
    """Run one client coroutine against `server`: its figures plus server CPU per round trip.

    The client is one core's Python: at ~100% of a core (`client_cpu_share`, over
    the run's `wall` seconds) a figure would be the client's, not the server's.
    """
    cpu, client_cpu = server.cpu_seconds(), time.process_time()
    result: dict[str, Any] = run_loop(run)
    trips = max(result["round_trips"], 1)
    result["cpu_us_per_round_trip"] = (server.cpu_seconds() - cpu) * 1e6 / trips
    result["client_cpu_share"] = (time.process_time() - client_cpu) / wall
    return result


def measure(server: Server, pairs: int, seconds: float) -> dict[str, Any]:
    result = measure_run(server, ping_pong(server.port, pairs, seconds), seconds + 1)
    result["server"] = server.name
    return result


FIGURES = ("round_trips_per_s", "p50_ms", "p99_ms", "max_ms", "cpu_us_per_round_trip", "client_cpu_share")


def redis_server() -> Server:
    """inbox-asgi on a redis-server of its own (a companion: its CPU counts as the server's)."""
    if shutil.which("redis-server") is None:
        raise SystemExit("--redis needs redis-server (apt-get install redis-server)")
    port = free_port()
    process = start_redis(Path(tempfile.mkdtemp(prefix="bench-ping-pong-redis-")), port)
    wait_for(lambda: answers(port, "ping").strip() == "PONG", "redis-server")
    flags = ("-long-polling-timeout", "30", "-redis-url", f"redis://127.0.0.1:{port}")
    server = with_redis(inbox_server(*flags, name="on-redis"), [process])
    server.redis = [process]  # type: ignore[attr-defined]
    return server


def run(args: argparse.Namespace) -> None:
    pin_client()
    runs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for pairs in args.pairs:
        servers = [inbox_server("-long-polling-timeout", "30")]
        if args.go:
            servers.append(go_server(args.go))
        if args.redis:
            servers.append(redis_server())
        try:
            for number in range(args.rounds):
                order = servers[number % len(servers):] + servers[: number % len(servers)]
                for server in order:
                    result = measure(server, pairs, args.duration)
                    result.update(round=number, pairs=pairs)
                    runs.append(result)
                    print(
                        f"  P={pairs} round {number + 1}/{args.rounds} {server.name:10}:"
                        f" {result['round_trips_per_s']:7.0f} round trips/s"
                        f"  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms"
                        f"  {result['cpu_us_per_round_trip']:5.0f} µs CPU/round trip"
                        f"  client {result['client_cpu_share']:4.0%} of a core",
                        flush=True,
                    )
        finally:
            for server in servers:
                server.stop()
                for process in getattr(server, "redis", ()):
                    process.terminate()
                    process.wait()
        for server in servers:
            mine = [run for run in runs if run["pairs"] == pairs and run["server"] == server.name]
            rows.append(
                {"pairs": pairs, "server": server.name}
                | {key: statistics.median(run[key] for run in mine) for key in FIGURES}
            )
    lines = [
        "| pairs | server | round trips/s | vs Go | p50 RTT ms | p99 RTT ms | p99 vs Go"
        " | server CPU µs/round trip | client CPU |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        go = next((r for r in rows if r["pairs"] == row["pairs"] and r["server"] == "inbox-go"), None)
        speed = f"{row['round_trips_per_s'] / go['round_trips_per_s']:.2f}x" if go else "-"
        tail = f"{row['p99_ms'] / go['p99_ms']:.2f}x" if go else "-"
        lines.append(
            f"| {row['pairs']} | {row['server']} | {row['round_trips_per_s']:.0f} | {speed}"
            f" | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {tail}"
            f" | {row['cpu_us_per_round_trip']:.0f} | {row['client_cpu_share']:.0%} |"
        )
    markdown = "\n".join(lines) + (
        f"\n\n{args.rounds} rounds x {args.duration:g} s per server, alternating, medians. A round trip"
        " is 2 POSTs and 2 long-poll GETs; servers on CPU 0, the client (this Python process, uvloop)"
        " on CPU 1; client CPU is its share of that core."
    )
    save("ping-pong", {"rows": rows, "runs": runs}, markdown)

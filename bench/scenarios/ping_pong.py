"""3. ping-pong: peer pairs answering each other at once through long polls.

A round trip is 2 POSTs and 2 long-poll GETs; the client is this Python process (uvloop) on
CPU 1, one fresh server per pair count.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from client import Connection, build
from harness import JSON, inbox_server, percentile, pin_client, run_loop, save


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
    rtts = sorted(round_trips)
    return {
        "pairs": pairs,
        "round_trips": len(rtts),
        "round_trips_per_s": len(rtts) / seconds,
        "p50_ms": percentile(rtts, 50) * 1000,
        "p99_ms": percentile(rtts, 99) * 1000,
        "max_ms": rtts[-1] * 1000 if rtts else 0.0,
    }


def run(args: argparse.Namespace) -> None:
    pin_client()
    runs = []
    rows = []
    for pairs in args.pairs:
        server = inbox_server("-long-polling-timeout", "30")
        try:
            for number in range(args.rounds):
                cpu = server.cpu_seconds()
                result = run_loop(ping_pong(server.port, pairs, args.duration))
                result["cpu_us_per_round_trip"] = (
                    (server.cpu_seconds() - cpu) * 1e6 / max(result["round_trips"], 1)
                )
                result["round"] = number
                runs.append(result)
                print(
                    f"  P={pairs} round {number + 1}/{args.rounds}:"
                    f" {result['round_trips_per_s']:7.0f} round trips/s"
                    f"  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms",
                    flush=True,
                )
        finally:
            server.stop()
        mine = [run for run in runs if run["pairs"] == pairs]
        rows.append({
            "pairs": pairs,
            **{key: statistics.median(run[key] for run in mine)
               for key in ("round_trips_per_s", "p50_ms", "p99_ms", "max_ms", "cpu_us_per_round_trip")},
        })  # fmt: skip
    lines = [
        "| pairs | round trips/s | p50 RTT ms | p99 RTT ms | max RTT ms | server CPU µs/round trip |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['pairs']} | {row['round_trips_per_s']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['max_ms']:.1f} | {row['cpu_us_per_round_trip']:.0f} |"
        )
    markdown = "\n".join(lines) + (
        f"\n\n{args.rounds} rounds x {args.duration:g} s, medians. A round trip is 2 POSTs and 2 long-poll"
        " GETs; the client is this Python process (uvloop) on CPU 1."
    )
    save("ping-pong", {"rows": rows, "runs": runs}, markdown)

"""A long-poll round trip against its floor, four plain pairs requests: user and system CPU apart.

    .venv/bin/python bench/round_trip_floor.py [--go /tmp/inbox-go/inbox] [--pairs 10 100]

A ping-pong round trip is 2 POSTs and 2 long-poll GETs; a pairs request (wrk,
50 connections, long polling off) is the cheapest request the server answers.
For each server this reads the server's user and system CPU time from /proc
around one pairs run and one ping-pong run per pair count (one fresh server
each), and prints CPU per round trip ÷ 4 pairs requests. The system part is
the sockets: wrk's 50 busy connections share each wake-up of the server,
ping-pong's few peers do not, so it is shown apart.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from harness import Server, go_server, inbox_server, pin_client, run_loop, run_setup, write_requests, wrk
from scenarios.pairs import pairs_requests
from scenarios.ping_pong import ping_pong


def cpu(server: Server) -> tuple[float, float]:
    """(user, system) seconds of the server process."""
    fields = Path(f"/proc/{server.pids()[0]}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def per(server: Server, count: int, before: tuple[float, float]) -> tuple[float, float]:
    after = cpu(server)
    return (after[0] - before[0]) * 1e6 / count, (after[1] - before[1]) * 1e6 / count


def measure(
    name: str, plain_server: Callable[[], Server], long_poll_server: Callable[[], Server], pairs: list[int],
    seconds: float,
) -> None:  # fmt: skip
    plain = plain_server()
    try:
        stream, create = pairs_requests()
        run_setup(plain, create)
        before = cpu(plain)
        result = wrk(plain.port, write_requests(stream), 2, 50, seconds)
        user, system = per(plain, max(result["requests"], 1), before)
    finally:
        plain.stop()
    print(f"{name}: pairs request    user {user:6.1f}  system {system:5.1f} µs")
    floor = 4 * (user + system)
    for count in pairs:
        server = long_poll_server()
        try:
            before = cpu(server)
            trips = run_loop(ping_pong(server.port, count, seconds))["round_trips"]
            trip_user, trip_system = per(server, max(trips, 1), before)
        finally:
            server.stop()
        ratio = (trip_user + trip_system) / floor
        print(
            f"{name}: round trip, {count:3d} pairs  user {trip_user:6.1f}  system {trip_system:5.1f} µs"
            f"  ÷ 4 pairs requests: {ratio:.2f} (user alone {trip_user / (4 * user):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--go", metavar="BINARY", help="the Go original's binary, measured the same way")
    parser.add_argument("--pairs", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    pin_client()
    plain = lambda: inbox_server("-long-polling=false")  # noqa: E731
    measure("inbox-asgi", plain, inbox_server, args.pairs, args.duration)
    if args.go:
        go: str = args.go
        measure("inbox-go", lambda: go_server(go, "-long-polling=false"), lambda: go_server(go), args.pairs,
                args.duration)  # fmt: skip


if __name__ == "__main__":
    main()

"""A/B two source trees of inbox-asgi on the pairs stream (or ping-pong): is a change faster?

    git archive HEAD src | tar -x -C /tmp/before      # the tree to compare against
    .venv/bin/python bench/ab.py /tmp/before/src src [--connections 50] [--rounds 6]
    .venv/bin/python bench/ab.py /tmp/before/src src --ping-pong 10 [--rounds 6]
    .venv/bin/python bench/ab.py /tmp/before/src src --ping-pong 10 --sockets   # over /inbox/ws

Both servers run side by side and are loaded in turn, exactly as `run.py`
compares servers (harness.py's `compare`, pinned, A B then B A ...), so they share the
machine's noise; it prints each run and the medians' ratio B/A.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import harness
from scenarios.pairs import pairs_requests
from scenarios.ping_pong import measure
from scenarios.sockets import socket_measure


def server(name: str, source: str, *flags: str) -> harness.Server:
    port = harness.free_port()
    argv = [
        "env", f"PYTHONPATH={source}", sys.executable, "-m", "inbox_asgi", "-https=false",
        "-bind", f"127.0.0.1:{port}", "-log-level", "warning", *(flags or ["-long-polling=false"]),
        *harness.BENCH_FLAGS,
    ]  # fmt: skip
    return harness.Server(name, argv, port)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", help="source directory A (holds inbox_asgi/)")
    parser.add_argument("b", help="source directory B")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--ping-pong", type=int, metavar="PAIRS", help="ping-pong with PAIRS pairs instead")
    parser.add_argument("--sockets", action="store_true", help="with --ping-pong: over /inbox/ws")
    args = parser.parse_args()
    if args.ping_pong:
        ping_pong_ab(args)
        return
    stream, create = pairs_requests()
    runs = harness.compare(
        lambda: [server("A", args.a), server("B", args.b)],
        stream, 2, [args.connections], args, lambda each: harness.run_setup(each, create),
    )  # fmt: skip
    rows = {row["server"]: row for row in harness.summarise(runs, "B", ["A"])}
    a, b = rows["A"], rows["B"]
    if a["errors"] or b["errors"]:
        sys.exit("a run had non-2xx responses or socket errors: the comparison is invalid")
    print(
        f"medians: A {a['rps']:.0f} req/s ({a['cpu_us']:.1f} µs CPU/req), "
        f"B {b['rps']:.0f} req/s ({b['cpu_us']:.1f} µs CPU/req); B/A {a['ours_rps_ratio']:.3f}"
    )


def ping_pong_ab(args: argparse.Namespace) -> None:
    """Long-poll ping-pong, A B then B A ...: round trips/s and server CPU per round trip."""
    harness.pin_client()
    flags = ("-long-polling-timeout", "30")
    servers = [server("A", args.a, *flags), server("B", args.b, *flags)]
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    try:
        for number in range(args.rounds):
            for each in servers if number % 2 == 0 else servers[::-1]:
                result = (socket_measure if args.sockets else measure)(each, args.ping_pong, args.duration)
                runs[each.name].append(result)
                print(
                    f"  {each.name}: {result['round_trips_per_s']:7.0f} round trips/s"
                    f"  {result['cpu_us_per_round_trip']:6.1f} µs CPU/round trip"
                    f"  p99 {result['p99_ms']:.2f} ms",
                    flush=True,
                )
    finally:
        for each in servers:
            each.stop()
    keys = ("round_trips_per_s", "cpu_us_per_round_trip")
    a, b = ({key: statistics.median(run[key] for run in runs[name]) for key in keys} for name in "AB")
    print(
        f"medians: A {a['round_trips_per_s']:.0f}/s {a['cpu_us_per_round_trip']:.1f} µs, "
        f"B {b['round_trips_per_s']:.0f}/s {b['cpu_us_per_round_trip']:.1f} µs; "
        f"B/A {b['round_trips_per_s'] / a['round_trips_per_s']:.3f} round trips/s, "
        f"{b['cpu_us_per_round_trip'] / a['cpu_us_per_round_trip']:.3f} CPU"
    )


if __name__ == "__main__":
    main()

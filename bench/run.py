"""The benchmark runner: one command per scenario, `all` for every one.

    .venv/bin/python bench/run.py pairs        # 1. POST s→r then GET as r, vs the reference apps
    .venv/bin/python bench/run.py post-only    # 2. three senders into one big inbox, vs the reference apps
    .venv/bin/python bench/run.py ping-pong    # 3. peers answering each other through long polls
    .venv/bin/python bench/run.py readers      # 4. N waiting readers: RSS, then N simultaneous deliveries
    .venv/bin/python bench/run.py expiry       # 5. 100k inboxes expiring at once, event-loop stall probe
    .venv/bin/python bench/run.py redis        # 6. pairs against 1 and 2 workers sharing Redis
    .venv/bin/python bench/run.py sockets      # 7. /inbox/ws vs long polls: ping-pong, burst, idle sockets
    .venv/bin/python bench/run.py all
    .venv/bin/python bench/run.py ping-pong --go /tmp/inbox-go/inbox   # beside the Go original (pairs too)

Every server runs on 127.0.0.1 pinned to CPU 0 (`taskset`), every load
generator (wrk, or this process for the Python-driven scenarios) on CPU 1.
Servers that are compared run side by side and are loaded in turn, A B C then
B C A…, over several rounds; the tables show medians. Each scenario prints its
table and writes it, with every raw run, to bench/results/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence

from scenarios import expiry, pairs, ping_pong, post_only, readers, redis, sockets

SCENARIOS: dict[str, Callable[[argparse.Namespace], None]] = {
    "pairs": pairs.run,
    "post-only": post_only.run,
    "ping-pong": ping_pong.run,
    "readers": readers.run,
    "expiry": expiry.run,
    "redis": redis.run,
    "sockets": sockets.run,
    "sockets-ping-pong": sockets.run_ping_pong,
    "sockets-burst": sockets.run_burst,
    "sockets-readers": sockets.run_readers,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per server (default 5)")
    parser.add_argument("--duration", type=float, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--connections", type=int, nargs="+", default=[50, 200], help="wrk connections")
    parser.add_argument("--pairs", type=int, nargs="+", default=[10, 100], help="ping-pong peer pairs")
    parser.add_argument("--readers", type=int, nargs="+", default=[1000, 5000, 10000], help="waiting readers")
    parser.add_argument("--no-max-readers", dest="max_readers", action="store_false",
                        help="skip the run at the open-file limit")  # fmt: skip
    parser.add_argument("--senders", type=int, default=32, help="sender connections in `readers`")
    parser.add_argument("--inboxes", type=int, default=100_000, help="inboxes in `expiry`")
    parser.add_argument("--redis", action="store_true", help="ping-pong: one more inbox-asgi, on Redis")
    parser.add_argument(
        "--go", metavar="BINARY", help="the Go original's binary, beside `pairs`, `ping-pong`, `sockets`"
    )
    args = parser.parse_args(argv)
    if args.go and shutil.which(args.go) is None:
        sys.exit(f"--go {args.go}: no such executable (see docs/performance.md)")
    if shutil.which("wrk") is None and args.scenario in ("pairs", "post-only", "redis", "all"):
        sys.exit("wrk is not installed: apt-get install wrk")
    for name in SCENARIOS if args.scenario == "all" else [args.scenario]:
        print(f"== {name}", flush=True)
        SCENARIOS[name](args)


if __name__ == "__main__":
    main()

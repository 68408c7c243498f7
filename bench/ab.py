"""A/B two source trees of inbox-asgi on the pairs stream: is a change faster?

    git archive HEAD src | tar -x -C /tmp/before      # the tree to compare against
    .venv/bin/python bench/ab.py /tmp/before/src src [--connections 50] [--rounds 6]

Both servers run side by side and are loaded in turn, exactly as `run.py`
compares servers (harness.py's `compare`, pinned, A B then B A ...), so they share the
machine's noise; it prints each run and the medians' ratio B/A.
"""

from __future__ import annotations

import argparse
import sys

import harness
from scenarios.pairs import pairs_requests


def server(name: str, source: str) -> harness.Server:
    port = harness.free_port()
    argv = [
        "env", f"PYTHONPATH={source}", sys.executable, "-m", "inbox_asgi", "-https=false",
        "-bind", f"127.0.0.1:{port}", "-log-level", "warning", "-long-polling=false", *harness.BENCH_FLAGS,
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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()

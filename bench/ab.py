"""A/B two source trees of inbox-asgi on the pairs stream: is a change faster?

    git archive HEAD src | tar -x -C /tmp/before      # the tree to compare against
    .venv/bin/python bench/ab.py /tmp/before/src src [--connections 50] [--rounds 6]

Both servers run side by side, pinned like `run.py`'s, and are loaded in turn
(A B, then B A, ...) so they share the machine's noise; it prints each run and
the medians' ratio B/A.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import run


def server(name: str, source: str) -> run.Server:
    port = run.free_port()
    argv = [
        "env", f"PYTHONPATH={source}", sys.executable, "-m", "inbox_asgi", "-https=false",
        "-bind", f"127.0.0.1:{port}", "-log-level", "warning", "-long-polling=false",
    ]  # fmt: skip
    return run.Server(name, argv, port)


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
    stream, create = run.pairs_requests()
    requests_file = run.write_requests(stream)
    servers = [server("A", args.a), server("B", args.b)]
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    try:
        for each in servers:
            run.run_setup(each, create)
            run.wrk(each.port, requests_file, 2, args.connections, 2)  # warm-up
        for number in range(args.rounds):
            for each in servers if number % 2 == 0 else servers[::-1]:
                result = run.loaded_run(each, requests_file, 2, args.connections, args.duration)
                if result["errors_total"]:
                    sys.exit(f"{each.name}: errors {result['errors']}: the run is invalid")
                runs[each.name].append(result)
                p99 = result["latency_us"]["p99"] / 1000
                print(
                    f"{each.name}: {result['rps']:8.0f} req/s  p99 {p99:6.2f} ms"
                    f"  {result['cpu_us_per_request']:5.1f} µs CPU/req",
                    flush=True,
                )
    finally:
        for each in servers:
            each.stop()
    rps = {name: statistics.median(r["rps"] for r in results) for name, results in runs.items()}
    cpu = {
        name: statistics.median(r["cpu_us_per_request"] for r in results) for name, results in runs.items()
    }
    print(
        f"medians: A {rps['A']:.0f} req/s ({cpu['A']:.1f} µs CPU/req), "
        f"B {rps['B']:.0f} req/s ({cpu['B']:.1f} µs CPU/req); B/A {rps['B'] / rps['A']:.3f}"
    )


if __name__ == "__main__":
    main()

"""6. Redis mode: pairs against the in-memory server, 1 worker and 2 workers sharing one Redis.

Skipped (with a message) when redis-server is not on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import tempfile
import time

from harness import SERVER_CPU, compare, free_port, inbox_server, run_setup, save, summarise, table

from scenarios.pairs import pairs_requests


def run(args: argparse.Namespace) -> None:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("redis: skipped, no redis-server on PATH")
        return
    port = free_port()
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    redis = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, redis_server, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    stream, create = pairs_requests()
    try:
        time.sleep(0.5)
        runs = compare(
            lambda: [
                inbox_server("-long-polling=false"),
                inbox_server("-long-polling=false", "-redis-url", url, name="redis-1-worker"),
                inbox_server(
                    "-long-polling=false", "-redis-url", url, "-workers", "2", name="redis-2-workers"
                ),
            ],
            stream, 2, args.connections[:1], args, lambda server: run_setup(server, create),
        )  # fmt: skip
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    rows = summarise(runs, "inbox-asgi", ["redis-1-worker", "redis-2-workers"])
    markdown = table(rows).replace("inbox-asgi req/s ÷ this", "in-memory req/s ÷ this").replace(
        "inbox-asgi p99 ÷ this", "in-memory p99 ÷ this"
    ) + (
        f"\n\n{args.rounds} rounds x {args.duration:g} s per server, medians. The in-memory server is"
        " pinned to CPU 0; Redis too; the two workers share CPU 0 with Redis (wrk has CPU 1), so"
        " the 2-worker row shows the cost of sharing state, not extra cores."
    )
    save("redis", {"rows": rows, "runs": runs}, markdown)

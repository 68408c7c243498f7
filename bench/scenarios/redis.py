"""6. Redis mode: CPU per pairs request, redis-server's included, in memory, on one Redis and on a
3-node Redis Cluster; then N workers on the cluster against one in-memory process.

Skipped (with a message) when redis-server or redis-cli is not on PATH. Every
Redis process is pinned to CPU 0 with the servers (wrk has CPU 1), and its CPU
time counts as the server's: "CPU µs/req" is inbox-asgi plus Redis.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from harness import SERVER_CPU, Server, compare, free_port, inbox_server, run_setup, save, summarise, table

from scenarios.pairs import pairs_requests

CLUSTER_OPTIONS = ("--cluster-enabled", "yes", "--cluster-require-full-coverage", "no")


def start_redis(directory: Path, port: int, *options: str) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server")
    assert binary is not None
    return subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, binary, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(directory), *options],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def answers(port: int, *command: str) -> str:
    done = subprocess.run(["redis-cli", "-p", str(port), *command], capture_output=True, text=True)
    return done.stdout


def wait_for(check: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up")
        time.sleep(0.1)


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) fits below 65536."""
    while (port := free_port()) > 55000:
        pass
    return port


def create_cluster(ports: Sequence[int]) -> None:
    """Join nodes started with CLUSTER_OPTIONS into one cluster, and wait until it serves."""
    subprocess.run(
        ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
         "--cluster-replicas", "0", "--cluster-yes"],
        check=True, capture_output=True,
    )  # fmt: skip
    ok = "cluster_state:ok"
    wait_for(lambda: all(ok in answers(p, "cluster", "info") for p in ports), "cluster")


def stop_redis(processes: Sequence[subprocess.Popen[bytes]], directory: Path) -> None:
    """Stop the redis-servers this run started (by their PIDs) and remove their directory."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(10)
    shutil.rmtree(directory, ignore_errors=True)


def with_redis(server: Server, processes: list[subprocess.Popen[bytes]]) -> Server:
    server.companions = [process.pid for process in processes]
    return server


def run(args: argparse.Namespace) -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        print("redis: skipped, no redis-server or redis-cli on PATH")
        return
    directory = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    single_port = free_port()
    single = start_redis(directory / "single", single_port)
    cluster_ports = [cluster_port() for _ in range(3)]
    cluster = [start_redis(directory / str(port), port, *CLUSTER_OPTIONS) for port in cluster_ports]
    everything = [single, *cluster]
    stream, create = pairs_requests()
    try:
        ports = [single_port, *cluster_ports]
        wait_for(lambda: all("PONG" in answers(p, "ping") for p in ports), "redis-server")
        create_cluster(cluster_ports)
        single_url = f"redis://127.0.0.1:{single_port}/0"
        cluster_url = f"redis://127.0.0.1:{cluster_ports[0]}/0"
        flags = ("-long-polling=false",)
        runs = compare(
            lambda: [
                inbox_server(*flags),
                with_redis(inbox_server(*flags, "-redis-url", single_url, name="redis-single"), [single]),
                with_redis(inbox_server(*flags, "-redis-url", cluster_url, name="redis-cluster"), cluster),
                with_redis(
                    inbox_server(*flags, "-redis-url", cluster_url, "-workers", "2", name="cluster-2-work"),
                    cluster,
                ),
            ],
            stream, 2, args.connections[:1], args, lambda server: run_setup(server, create),
        )  # fmt: skip
    finally:
        stop_redis(everything, directory)
    rows = summarise(runs, "inbox-asgi", ["redis-single", "redis-cluster", "cluster-2-work"])
    memory_cpu = next(row["cpu_us"] for row in rows if row["server"] == "inbox-asgi")
    lines = [
        "| server | CPU µs/req (inbox-asgi + Redis) | of which Redis | ÷ in-memory |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        redis_cpu = statistics.median(
            run["companion_cpu_us_per_request"] for run in runs if run["server"] == row["server"]
        )
        lines.append(
            f"| {row['server']} | {row['cpu_us']:.0f} | {redis_cpu:.0f} | {row['cpu_us'] / memory_cpu:.2f} |"
        )
    markdown = (
        table(rows).replace("inbox-asgi req/s ÷ this", "in-memory req/s ÷ this").replace(
            "inbox-asgi p99 ÷ this", "in-memory p99 ÷ this"
        )
        + "\n\n" + "\n".join(lines)
        + f"\n\n{args.rounds} rounds x {args.duration:g} s per server, medians; CPU per request includes"
        " every redis-server process of the row. Servers and Redis share CPU 0 (wrk has CPU 1), so the"
        " 2-worker row shows what sharing state costs, not what extra cores would buy."
    )  # fmt: skip
    save("redis", {"rows": rows, "runs": runs}, markdown)

"""What every scenario of bench/run.py shares: servers, load, figures.

- processes: `Server` (a server started pinned to CPU 0, stopped by its PID only, with its CPU
  time and RSS read from /proc), `inbox_server`, `reference_server` (bench/reference_apps.py) and
  `go_server` (the Go original, for side-by-side figures);
- load: `wrk` replaying pre-built requests (bench/lua/replay.lua) pinned to CPU 1, `alternate`
  loading several servers in turn (A B C, B C A, ...), `compare` (start, alternate, stop),
  `run_setup`, `pin_client` and `run_loop` for the Python-driven scenarios, `metrics`;
- figures: `summarise` (medians, ratios to the references), `table`, `percentile`, `check`,
  `save` (prints a table and writes it, with the raw runs, to bench/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from client import Connection, run_all

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
VENV_BIN = Path(sys.executable).parent
SERVER_CPU = "0"
CLIENT_CPU = "1"
#: A small ICE candidate, the most common signaling message.
BODY = (
    b'{"type":"candidate","candidate":"candidate:1 1 udp 2122260223 192.168.1.20 54321 typ host'
    b' generation 0","sdpMid":"0","sdpMLineIndex":0}'
)
JSON = b"application/json"


# -- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_open_files() -> int:
    """Soft open-file limit up to the hard limit (for this process and the servers it starts)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


#: Every bench client is 127.0.0.1: thousands of peers from one address, which
#: -max-inboxes-per-ip would (rightly) refuse with 429.
BENCH_FLAGS = ("-max-inboxes-per-ip", "0")

#: Servers started and not yet stopped, so that `compare` stops those of a failed start too.
RUNNING: list[Server] = []


class Server:
    """A server process this runner started; stopped by its PID only."""

    def __init__(self, name: str, argv: Sequence[str], port: int, ready_path: str = "/healthz") -> None:
        self.name = name
        self.port = port
        #: Processes the server relies on whose CPU counts as its own (e.g. redis-server).
        self.companions: list[int] = []
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("INBOX_")}
        env["PYTHONPATH"] = str(BENCH)
        self.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *argv],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            preexec_fn=raise_open_files,
        )
        RUNNING.append(self)
        self._wait_ready(ready_path)

    def _wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + 30
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cmVhZHk6eA==\r\n\r\n".encode()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {Path(self.log.name).read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(request)
                    if sock.recv(64).startswith(b"HTTP/1.1 2"):
                        self.started = time.monotonic()
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start: {Path(self.log.name).read_text()}")

    def pids(self) -> list[int]:
        """The server and its worker processes."""
        found = [self.process.pid]
        for pid in found:
            children = Path(f"/proc/{pid}/task/{pid}/children")
            if children.exists():
                found += [int(child) for child in children.read_text().split()]
        return found

    def cpu_seconds(self, pids: Sequence[int] | None = None) -> float:
        """CPU time of the server's processes and its companions (or of `pids`)."""
        total = 0
        for pid in [*self.pids(), *self.companions] if pids is None else pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        os.unlink(self.log.name)


def inbox_server(*flags: str, name: str = "inbox-asgi") -> Server:
    port = free_port()
    argv = [
        str(VENV_BIN / "inbox-asgi"),
        "-https=false",
        "-bind",
        f"127.0.0.1:{port}",
        "-log-level",
        "warning",
        *BENCH_FLAGS,
    ]
    return Server(name, [*argv, *flags], port)


def reference_server(kind: str) -> Server:
    port = free_port()
    argv = [sys.executable, str(BENCH / "reference_apps.py"), kind, str(port)]
    return Server(f"{kind}-asgi" if kind == "raw" else kind, argv, port, ready_path="/inbox")


def go_server(binary: str, *flags: str) -> Server:
    """The Go original (`-https=false`; its static files from ./public, which answers the readiness check)."""
    port = free_port()
    argv = [binary, "-https=false", "-bind", f"127.0.0.1:{port}", *flags]
    return Server("inbox-go", argv, port, ready_path="/")


# -- wrk ---------------------------------------------------------------------------------------


def write_requests(requests: Sequence[bytes]) -> str:
    handle, path = tempfile.mkstemp(prefix="bench-requests-")
    with os.fdopen(handle, "wb") as file:
        file.write(b"\0".join(requests))
    return path


def wrk(port: int, requests_file: str, group: int, connections: int, seconds: float) -> dict[str, Any]:
    threads = 2
    command = [
        "taskset", "-c", CLIENT_CPU, "wrk", f"-t{threads}", f"-c{connections}", f"-d{round(seconds)}s",
        "--timeout", "5s", "-s", str(BENCH / "lua" / "replay.lua"), f"http://127.0.0.1:{port}",
        "--", requests_file, str(group), str(threads),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True)
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    result["errors_total"] = sum(result["errors"].values())
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def loaded_run(
    server: Server, requests_file: str, group: int, connections: int, seconds: float
) -> dict[str, Any]:
    """One wrk run, with the server's CPU time per request."""
    cpu, companions = server.cpu_seconds(), server.cpu_seconds(server.companions)
    result = wrk(server.port, requests_file, group, connections, seconds)
    requests = max(result["requests"], 1)
    result["cpu_us_per_request"] = (server.cpu_seconds() - cpu) * 1e6 / requests
    companions = server.cpu_seconds(server.companions) - companions
    result["companion_cpu_us_per_request"] = companions * 1e6 / requests
    result["server"] = server.name
    result["connections"] = connections
    return result


def alternate(
    servers: Sequence[Server],
    requests_file: str,
    group: int,
    connections: Sequence[int],
    rounds: int,
    seconds: float,
    prepare: Callable[[Server], None] = lambda server: None,
) -> list[dict[str, Any]]:
    """Load each server in turn (A B C, B C A, …) for `rounds` rounds per connection count."""
    for server in servers:  # warm-up, not recorded
        prepare(server)
        wrk(server.port, requests_file, group, min(connections), 2)
    runs = []
    for count in connections:
        for number in range(rounds):
            order = [servers[(number + i) % len(servers)] for i in range(len(servers))]
            for server in order:
                prepare(server)
                result = loaded_run(server, requests_file, group, count, seconds)
                result["round"] = number
                runs.append(result)
                print(
                    f"  c={count} round {number + 1}/{rounds} {server.name:>14}: {result['rps']:8.0f} req/s"
                    f"  p50 {result['latency_us']['p50'] / 1000:6.2f} ms"
                    f"  p99 {result['latency_us']['p99'] / 1000:7.2f} ms"
                    f"  {result['cpu_us_per_request']:5.0f} µs CPU/req"
                    + (f"  ERRORS {result['errors']}" if result["errors_total"] else ""),
                    flush=True,
                )
    return runs


def summarise(runs: Sequence[dict[str, Any]], ours: str, references: Sequence[str]) -> list[dict[str, Any]]:
    """Medians per server and connection count, and our ratios to each reference."""
    rows = []
    for count in sorted({run["connections"] for run in runs}):
        medians = {}
        for name in [ours, *references]:
            mine = [run for run in runs if run["server"] == name and run["connections"] == count]
            if not mine:
                continue
            medians[name] = {
                "connections": count,
                "server": name,
                "runs": len(mine),
                "rps": statistics.median(run["rps"] for run in mine),
                "p50_ms": statistics.median(run["latency_us"]["p50"] for run in mine) / 1000,
                "p99_ms": statistics.median(run["latency_us"]["p99"] for run in mine) / 1000,
                "cpu_us": statistics.median(run["cpu_us_per_request"] for run in mine),
                "errors": sum(run["errors_total"] for run in mine),
            }
        for name, row in medians.items():
            if name != ours and ours in medians:
                row["ours_rps_ratio"] = medians[ours]["rps"] / row["rps"]
                row["ours_p99_ratio"] = medians[ours]["p99_ms"] / row["p99_ms"]
            rows.append(row)
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| conns | server | req/s | p50 ms | p99 ms | CPU µs/req"
        " | inbox-asgi req/s ÷ this | inbox-asgi p99 ÷ this |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        ratio = f"{row['ours_rps_ratio']:.2f}" if "ours_rps_ratio" in row else ""
        p99_ratio = f"{row['ours_p99_ratio']:.2f}" if "ours_p99_ratio" in row else ""
        errors = f" ({row['errors']} errors: INVALID)" if row["errors"] else ""
        lines.append(
            f"| {row['connections']} | {row['server']}{errors} | {row['rps']:.0f} | {row['p50_ms']:.2f} "
            f"| {row['p99_ms']:.2f} | {row['cpu_us']:.0f} | {ratio} | {p99_ratio} |"
        )
    return "\n".join(lines)


def save(scenario: str, figures: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    figures = {"scenario": scenario, "when": stamp, "machine": machine(), **figures}
    (RESULTS / f"{scenario}-{stamp}.json").write_text(json.dumps(figures, indent=1))
    (RESULTS / f"{scenario}-latest.md").write_text(f"## {scenario} ({stamp})\n\n{markdown}\n")
    print(f"\n{markdown}\n\nwritten to {RESULTS}/{scenario}-{stamp}.json", flush=True)


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown CPU",
    )  # fmt: skip
    return f"{os.cpu_count()} x {cpu}, Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}"


def check(label: str, ok: bool) -> str:
    return f"- {label}: {'**met**' if ok else '**NOT met**'}"


def run_setup(server: Server, requests: list[bytes]) -> None:
    """Send requests (e.g. creating the recipients) before a measured run; all must be 2xx."""
    statuses = {response.status for response in asyncio.run(run_all(server.port, requests))}
    if not statuses <= {200, 204}:
        raise RuntimeError(f"set-up requests to {server.name} got {statuses}")


def compare(
    start: Callable[[], list[Server]],
    stream: Sequence[bytes],
    group: int,
    connections: Sequence[int],
    args: argparse.Namespace,
    prepare: Callable[[Server], None],
) -> list[dict[str, Any]]:
    """Start the servers, replay `stream` against each in turn (after `prepare`), stop them."""
    requests_file = write_requests(stream)
    already = list(RUNNING)
    try:
        return alternate(
            start(), requests_file, group, connections, args.rounds, args.duration,
            prepare=prepare,
        )  # fmt: skip
    finally:
        for server in [server for server in RUNNING if server not in already]:
            server.stop()
        os.unlink(requests_file)


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def pin_client() -> None:
    os.sched_setaffinity(0, {int(CLIENT_CPU)})


def run_loop(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


async def metrics(port: int) -> dict[str, float]:
    connection = await Connection.open(port)
    response = await connection.request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    connection.close()
    values = {}
    for line in response.body.decode().splitlines():
        if line.startswith("inbox_") and not line.startswith("inbox_requests"):
            name, value = line.split()
            values[name] = float(value)
    return values

"""The benchmark runner: one command per scenario, `all` for every one.

    .venv/bin/python bench/run.py pairs        # 1. POST s→r then GET as r, vs the reference apps
    .venv/bin/python bench/run.py post-only    # 2. three senders into one big inbox, vs the reference apps
    .venv/bin/python bench/run.py ping-pong    # 3. peers answering each other through long polls
    .venv/bin/python bench/run.py readers      # 4. N waiting readers: RSS, then N simultaneous deliveries
    .venv/bin/python bench/run.py expiry       # 5. 100k inboxes expiring at once, event-loop stall probe
    .venv/bin/python bench/run.py redis        # 6. pairs against 1 and 2 workers sharing Redis
    .venv/bin/python bench/run.py all

Every server runs on 127.0.0.1 pinned to CPU 0 (`taskset`), every load
generator (wrk, or this process for the Python-driven scenarios) on CPU 1.
Servers that are compared run side by side and are loaded in turn, A B C then
B C A…, over several rounds; the tables show medians. Each scenario prints its
table and writes it, with every raw run, to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
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

from client import Connection, build, run_all

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


class Server:
    """A server process this runner started; stopped by its PID only."""

    def __init__(self, name: str, argv: Sequence[str], port: int, ready_path: str = "/healthz") -> None:
        self.name = name
        self.port = port
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

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
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
    ]
    return Server(name, [*argv, *flags], port)


def reference_server(kind: str) -> Server:
    port = free_port()
    argv = [sys.executable, str(BENCH / "reference_apps.py"), kind, str(port)]
    return Server(f"{kind}-asgi" if kind == "raw" else kind, argv, port, ready_path="/inbox")


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
    cpu = server.cpu_seconds()
    result = wrk(server.port, requests_file, group, connections, seconds)
    result["cpu_us_per_request"] = (server.cpu_seconds() - cpu) * 1e6 / max(result["requests"], 1)
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


# -- 1. pairs -------------------------------------------------------------------------------------


def pairs_requests(count: int = 1000) -> tuple[list[bytes], list[bytes]]:
    """(the replayed stream: POST as s_i to r_i, then GET as r_i; the GETs that create every r_i)."""
    stream, create = [], []
    for i in range(count):
        stream.append(build("POST", f"/inbox?to=r{i}", f"s{i}", BODY, JSON))
        stream.append(build("GET", "/inbox", f"r{i}"))
        create.append(build("GET", "/inbox", f"r{i}"))
    return stream, create


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
    servers: list[Server] = []
    try:
        servers = start()
        return alternate(
            servers, requests_file, group, connections, args.rounds, args.duration,
            prepare=prepare,
        )  # fmt: skip
    finally:
        for server in servers:
            server.stop()
        os.unlink(requests_file)


def scenario_pairs(args: argparse.Namespace) -> None:
    stream, create = pairs_requests()
    runs = compare(
        lambda: [inbox_server("-long-polling=false"), reference_server("raw"), reference_server("starlette")],
        stream, 2, args.connections, args, lambda server: run_setup(server, create),
    )  # fmt: skip
    rows = summarise(runs, "inbox-asgi", ["raw-asgi", "starlette"])
    raw = {row["connections"]: row for row in rows if row["server"] == "raw-asgi"}
    notes = []
    if 50 in raw:
        notes.append(check("pairs @50: ≥ 0.8x raw-ASGI req/s", raw[50]["ours_rps_ratio"] >= 0.8))
        notes.append(check("pairs @50: p99 ≤ raw-ASGI p99", raw[50]["ours_p99_ratio"] <= 1.0))
    if 200 in raw:
        notes.append(check("pairs @200: p99 ≤ 1.5x raw-ASGI p99", raw[200]["ours_p99_ratio"] <= 1.5))
    if any(row["errors"] for row in rows):
        notes.append("- **a run had non-2xx responses or socket errors: the figures are invalid**")
    markdown = (
        table(rows)
        + f"\n\n{args.rounds} rounds x {args.duration:g} s per server, medians.\n"
        + "\n".join(notes)
    )
    save("pairs", {"rows": rows, "runs": runs}, markdown)


# -- 2. post-only --------------------------------------------------------------------------------


def drain_sink(server: Server) -> None:
    """Before each round, empty (and so also keep alive) the sink inbox of inbox-asgi.

    A round leaves ~100k messages in it; rounds on a full sink would measure a
    queue of a million Python objects (and the garbage collector walking it),
    which no signaling inbox ever holds.
    """
    if server.name != "inbox-asgi":
        return
    while True:
        answers = asyncio.run(run_all(server.port, [build("GET", "/inbox", "sink")] * 4000, batch=500))
        if any(answer.status == 204 for answer in answers):
            return


def scenario_post_only(args: argparse.Namespace) -> None:
    stream = [build("POST", "/inbox?to=sink", f"sender{i}", BODY, JSON) for i in range(3)]
    runs = compare(
        lambda: [
            inbox_server("-long-polling=false", "-inbox-capacity", "100000000"),
            reference_server("raw"),
            reference_server("starlette"),
        ],
        stream, 1, args.connections[:1], args, drain_sink,
    )  # fmt: skip
    rows = summarise(runs, "inbox-asgi", ["raw-asgi", "starlette"])
    markdown = table(rows) + f"\n\n{args.rounds} rounds x {args.duration:g} s per server, medians."
    save("post-only", {"rows": rows, "runs": runs}, markdown)


# -- 3. ping-pong -----------------------------------------------------------------------------------


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


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def pin_client() -> None:
    os.sched_setaffinity(0, {int(CLIENT_CPU)})


def scenario_ping_pong(args: argparse.Namespace) -> None:
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


def run_loop(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# -- 4. waiting readers ---------------------------------------------------------------------------------


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


async def waiting_readers(server: Server, count: int, senders: int, source: str) -> dict[str, Any]:
    port = server.port
    rss_before = server.rss_kib()
    readers: list[Connection] = []
    results: list[asyncio.Future[Any]] = []
    for start in range(0, count, 500):  # connect in batches: the listen backlog is finite
        batch = await asyncio.gather(
            *(Connection.open(port, source=source) for _ in range(start, min(count, start + 500)))
        )
        for i, connection in enumerate(batch, start):
            results.append(connection.send(build("GET", "/inbox", f"reader{i}")))
        readers += batch
    deadline = time.monotonic() + 60
    while (waiting := (await metrics(port)).get("inbox_waiting_readers", 0)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {waiting} of {count} readers are waiting")
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    rss_waiting = server.rss_kib()

    arrivals: dict[int, float] = {}
    statuses: dict[int, int] = {}
    odd: list[dict[str, Any]] = []  # non-200 answers: which reader, what, when (s after the readers parked)
    phase_start = time.monotonic()

    def arrived(i: int, future: asyncio.Future[Any]) -> None:
        now = time.monotonic()
        response = future.result()
        statuses[i] = response.status
        if response.status != 200:
            odd.append({"reader": i, "status": response.status, "at_s": now - phase_start})
        if response.status == 200:
            index, sent = response.body.split()
            if int(index) != i or response.headers.get(b"x-from", b"").decode() != f"sender{i % senders}":
                raise RuntimeError(f"reader {i} got someone else's message: {response.body!r}")
            arrivals[i] = now - float(sent)

    for i, future in enumerate(results):
        future.add_done_callback(lambda future, i=i: arrived(i, future))

    async def sender(number: int) -> None:
        connection = await Connection.open(port, source=source)
        for i in range(number, count, senders):
            body = b"%d %f" % (i, time.monotonic())
            response = await connection.request(
                build("POST", f"/inbox?to=reader{i}", f"sender{number}", body)
            )
            if response.status != 200:
                raise RuntimeError(f"POST to reader{i} got {response.status}")
        connection.close(reset=True)

    started = time.monotonic()
    await asyncio.gather(*(sender(n) for n in range(senders)))
    await asyncio.wait(results, timeout=30)
    elapsed = time.monotonic() - started
    after = await metrics(port)
    for connection in readers:
        connection.close(reset=True)
    latencies = sorted(arrivals.values())
    delivered = len(arrivals)
    return {
        "readers": count,
        "rss_before_kib": rss_before,
        "rss_waiting_kib": rss_waiting,
        "kib_per_reader": (rss_waiting - rss_before) / count,
        "delivered": delivered,
        "non_200": sum(1 for status in statuses.values() if status != 200),
        "statuses": {str(status): list(statuses.values()).count(status) for status in set(statuses.values())},
        "unanswered": count - len(statuses),
        "non_200_answers": odd[:20],
        "delivery_started_at_s": started - phase_start,
        "queued_after": after.get("inbox_queued_messages", -1),
        "waiting_after": after.get("inbox_waiting_readers", -1),
        "exactly_once": delivered == count and after.get("inbox_queued_messages") == 0,
        "delivery_seconds": elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": (latencies[-1] if latencies else 0) * 1000,
    }


def scenario_readers(args: argparse.Namespace) -> None:
    hard = raise_open_files()
    pin_client()
    counts = [*args.readers, hard - 100] if args.max_readers else list(args.readers)
    rows = []
    for number, count in enumerate(counts):
        server = inbox_server("-metrics", "-long-polling-timeout", "300", "-max-inboxes", str(count + 1000))
        try:
            # Warm the server up (imports, caches) before the baseline RSS: 200 messages to self,
            # then 200 GETs that take them (a GET on an empty inbox would wait).
            run_setup(server, [build("POST", f"/inbox?to=warm{i}", f"warm{i}", BODY) for i in range(200)])
            run_setup(server, [build("GET", "/inbox", f"warm{i}") for i in range(200)])
            row = run_loop(waiting_readers(server, count, args.senders, f"127.0.0.{10 + number}"))
        finally:
            server.stop()
        rows.append(row)
        print(
            f"  N={count}: {row['kib_per_reader']:.2f} KiB/reader, delivery p50 {row['p50_ms']:.1f} ms"
            f" p99 {row['p99_ms']:.1f} ms max {row['max_ms']:.1f} ms, exactly once: {row['exactly_once']}",
            flush=True,
        )
    lines = [
        "| waiting readers | server RSS idle → waiting (MiB) | KiB per reader"
        " | delivery p50 ms | p99 ms | max ms"
        " | all {N} delivered in | exactly once |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines[0] = lines[0].replace("{N}", "N")
    for row in rows:
        lines.append(
            f"| {row['readers']} | {row['rss_before_kib'] / 1024:.0f} → {row['rss_waiting_kib'] / 1024:.0f} "
            f"| {row['kib_per_reader']:.2f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f}"
            f" | {row['max_ms']:.1f} "
            f"| {row['delivery_seconds']:.2f} s | {'yes' if row['exactly_once'] else 'NO'} "
            f"({row['delivered']}/{row['readers']}, {row['queued_after']:.0f} left queued) |"
        )
    ten_k = next((row for row in rows if row["readers"] == 10000), None)
    notes = [check("≤ 12 KiB per waiting reader", all(row["kib_per_reader"] <= 12 for row in rows))]
    if ten_k:
        notes.append(
            check(
                "10k deliveries p99 ≤ 100 ms, exactly once", ten_k["p99_ms"] <= 100 and ten_k["exactly_once"]
            )
        )
    notes.append(
        check(
            f"readers up to the open-file limit ({hard}) without errors", all(r["exactly_once"] for r in rows)
        )
    )
    markdown = "\n".join(lines) + (
        f"\n\nOne fresh server per N. Delivery latency: from a message's POST leaving the sender to its"
        f" reader's 200 arriving, {args.senders} sender connections posting back to back."
        "\n" + "\n".join(notes)
    )
    save("readers", {"rows": rows}, markdown)


# -- 5. expiry --------------------------------------------------------------------------------------


async def expiry_probe(server: Server, inboxes: int, inbox_timeout: float, interval: float) -> dict[str, Any]:
    """Create `inboxes` inboxes early, then probe /healthz back to back until the expiry pass is over.

    The cleanup task starts with the server, so its passes fall at start + k x interval. All
    inboxes are created before `interval - inbox_timeout` seconds have passed, so they all
    expire between two passes and the pass at `start + interval` deletes them at once.
    """
    port = server.port
    started = server.started
    create = [build("GET", "/inbox", f"e{i}") for i in range(inboxes)]
    await run_all(port, create, connections=8, batch=500)
    created = time.monotonic() - started
    before = await metrics(port)
    probe = await Connection.open(port)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    samples: list[tuple[float, float]] = []
    end = started + interval + 3
    while (now := time.monotonic()) < end:
        await probe.request(request)
        samples.append((now - started, time.monotonic() - now))
    probe.close()
    after = await metrics(port)
    latencies = sorted(latency for _, latency in samples)
    worst_at, worst = max(samples, key=lambda sample: sample[1])
    # The pass starts at `interval` s after start-up (ready, give or take the 0.1 s poll).
    in_pass = [latency for at, latency in samples if interval - 0.5 <= at <= interval + 3]
    return {
        "inboxes": inboxes,
        "created_within_s": created,
        "valid": created + inbox_timeout < interval - 0.5,
        "inboxes_before": before.get("inbox_inboxes"),
        "inboxes_after": after.get("inbox_inboxes"),
        "probes": len(samples),
        "probe_p50_ms": percentile(latencies, 50) * 1000,
        "probe_p99_ms": percentile(latencies, 99) * 1000,
        "longest_stall_ms": worst * 1000,
        "longest_stall_in_pass_ms": max(in_pass, default=0.0) * 1000,
        "probes_in_pass": len(in_pass),
        "longest_stall_at_s": worst_at,
        "expiry_pass_at_s": interval,
    }


def scenario_expiry(args: argparse.Namespace) -> None:
    pin_client()
    interval, timeout = 40.0, 20.0
    server = inbox_server(
        "-metrics", "-long-polling=false", "-cleanup-interval", str(interval),
        "-inbox-timeout", str(timeout), "-max-inboxes", str(args.inboxes * 2),
    )  # fmt: skip
    try:
        row = run_loop(expiry_probe(server, args.inboxes, timeout, interval))
    finally:
        server.stop()
    markdown = (
        "| inboxes expiring | inboxes before → after the pass | probes | probe p50 ms | probe p99 ms"
        " | slowest probe around the pass ms | slowest probe overall ms |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        f"| {row['inboxes']} | {row['inboxes_before']:.0f} → {row['inboxes_after']:.0f} | {row['probes']}"
        f" | {row['probe_p50_ms']:.2f} | {row['probe_p99_ms']:.2f} | {row['longest_stall_in_pass_ms']:.1f}"
        f" | {row['longest_stall_ms']:.1f} (at {row['longest_stall_at_s']:.1f} s) |\n\n"
        f"Inboxes created in the first {row['created_within_s']:.1f} s, with -inbox-timeout {timeout:g} and"
        f" -cleanup-interval {interval:g}, so the pass at {interval:g} s finds every one expired."
        " The probe is one connection sending GET /healthz back to back from the end of creation to 3 s"
        " after the pass: any event-loop stall holds up the probe in flight, so the slowest probe bounds"
        " the longest stall from above.\n"
        + f"Around the pass = from {interval - 0.5:g} s to {interval + 3:g} s after start-up.\n"
        + check("no stall over 20 ms during the expiry pass", row["longest_stall_in_pass_ms"] <= 20)
        + ("" if row["valid"] else "\n- **creation took too long: the inboxes did not expire at once**")
    )
    save("expiry", {"row": row}, markdown)


# -- 6. Redis ------------------------------------------------------------------------------------------


def scenario_redis(args: argparse.Namespace) -> None:
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


# -- command line ---------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[argparse.Namespace], None]] = {
    "pairs": scenario_pairs,
    "post-only": scenario_post_only,
    "ping-pong": scenario_ping_pong,
    "readers": scenario_readers,
    "expiry": scenario_expiry,
    "redis": scenario_redis,
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
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None and args.scenario in ("pairs", "post-only", "redis", "all"):
        sys.exit("wrk is not installed: apt-get install wrk")
    for name in SCENARIOS if args.scenario == "all" else [args.scenario]:
        print(f"== {name}", flush=True)
        SCENARIOS[name](args)


if __name__ == "__main__":
    main()

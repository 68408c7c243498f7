"""7. sockets: the WebSocket transport (/inbox/ws) against long polling, in-memory backend.

- ping-pong: P peer pairs, each answering every message at once, over sockets (a `send` frame
  out, `sent` back, a `message` frame to the peer, which acks it in the same write as its
  answer: 8 frames and 4 reads/writes of the server per round trip) against the same over long
  polls (2 POSTs, 2 GETs; bench/scenarios/ping_pong.py) on the same inbox-asgi, and with --go
  the Go original's long polls; the three are loaded in turn, server CPU per round trip from
  /proc, medians. The client (this process, uvloop, bench/ws_client.py) reports its CPU share.
- burst: 20 ICE candidates POSTed at once (pipelined on one connection) to a peer: time from
  the first POST leaving until the 20th message has arrived, at a socket reader (pushed, one
  ack per read) and at a long-poll reader (one GET per message).
- readers: N idle sockets (one fresh server per N): RSS per socket, then one POST to each
  (32 sender connections), each delivered exactly once (per-reader counts, /metrics 0 queued
  afterwards), latency p50/p99.

    .venv/bin/python bench/run.py sockets --go /tmp/inbox-go/inbox --rounds 3 --duration 4 \
        --readers 1000 10000
    .venv/bin/python bench/ab.py /tmp/before/src src --ping-pong 10 --sockets   # A/B, 10 pairs
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from itertools import count
from typing import Any

from client import Connection, build
from harness import (
    BODY,
    JSON,
    Server,
    check,
    go_server,
    inbox_server,
    metrics,
    percentile,
    pin_client,
    raise_open_files,
    run_loop,
    run_setup,
    save,
)
from ws_client import WsConnection, dumps

from scenarios.ping_pong import measure as long_poll_measure
from scenarios.ping_pong import measure_run, rtt_figures
from scenarios.readers import post_to_readers

_runs = count()
BURST = 20


# -- ping-pong over sockets ---------------------------------------------------------------


async def socket_ping_pong(port: int, pairs: int, seconds: float) -> dict[str, Any]:
    """Each pair: a sends a ping to b, b answers at once, a times the round trip and pings again."""
    run = next(_runs)
    round_trips: list[float] = []
    stop_at = float("inf")
    errors: list[dict[str, Any]] = []

    def peer(connection: WsConnection, other: str, starts: bool) -> None:
        def on_frames(frames: list[dict[str, Any]]) -> None:
            now = time.monotonic()
            highest, out = 0, []
            for frame in frames:
                kind = frame["type"]
                if kind == "message":
                    highest = frame["id"]
                    if starts:
                        round_trips.append(now - float(frame["body"]))
                        if now < stop_at:
                            out.append(ping(b"%f" % now))
                    else:
                        out.append(ping(frame["body"].encode()))
                elif kind == "error":
                    errors.append(frame)
            if highest:
                # The ack rides in the same write as the answer, as a real client writes them.
                connection.write(dumps({"type": "ack", "id": highest}), *out)

        def ping(body: bytes) -> str:
            frame = {
                "type": "send",
                "ref": 1,
                "to": other,
                "body": body.decode(),
                "content_type": "application/json",
            }
            return dumps(frame)

        connection.listen(on_frames)
        if starts:
            connection.write(ping(b"%f" % time.monotonic()))

    connections = []
    for i in range(pairs):
        a = await WsConnection.open(port, f"ws{run}a{i}")
        b = await WsConnection.open(port, f"ws{run}b{i}")
        connections += [(a, f"ws{run}b{i}", True), (b, f"ws{run}a{i}", False)]
    await asyncio.sleep(0.2)
    started = time.monotonic()
    stop_at = started + seconds
    for connection, other, starts in connections:
        peer(connection, other, starts)
    await asyncio.sleep(seconds + 0.2)  # the last pings come back
    for connection, _, _ in connections:
        connection.close(reset=True)
    if errors:
        raise RuntimeError(f"error frames: {errors[:3]}")
    return rtt_figures(pairs, round_trips, seconds)


def socket_measure(server: Server, pairs: int, seconds: float) -> dict[str, Any]:
    return measure_run(server, socket_ping_pong(server.port, pairs, seconds), seconds + 0.6)


FIGURES = ("round_trips_per_s", "p50_ms", "p99_ms", "max_ms", "cpu_us_per_round_trip", "client_cpu_share")


def alternate(
    modes: Sequence[tuple[str, Server, Callable[[Server, int, float], dict[str, Any]]]],
    pairs: int,
    rounds: int,
    seconds: float,
) -> list[dict[str, Any]]:
    runs = []
    for number in range(rounds):
        order = list(modes[number % len(modes) :]) + list(modes[: number % len(modes)])
        for name, server, measure in order:
            result = measure(server, pairs, seconds)
            result.update(round=number, pairs=pairs, mode=name)
            runs.append(result)
            print(
                f"  P={pairs} round {number + 1}/{rounds} {name:22}: {result['round_trips_per_s']:7.0f} rt/s"
                f"  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms"
                f"  {result['cpu_us_per_round_trip']:5.0f} µs CPU/rt"
                f"  client {result['client_cpu_share']:4.0%}",
                flush=True,
            )
    return runs


def ping_pong_part(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    runs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for pairs in args.pairs:
        servers = [inbox_server("-long-polling-timeout", "30")]
        modes: list[tuple[str, Server, Callable[[Server, int, float], dict[str, Any]]]] = [
            ("inbox-asgi socket", servers[0], socket_measure),
            ("inbox-asgi long poll", servers[0], long_poll_measure),
        ]
        if args.go:
            servers.append(go_server(args.go))
            modes.append(("Go original long poll", servers[1], long_poll_measure))
        try:
            runs += alternate(modes, pairs, args.rounds, args.duration)
        finally:
            for server in servers:
                server.stop()
        for name, _, _ in modes:
            mine = [run for run in runs if run["pairs"] == pairs and run["mode"] == name]
            rows.append(
                {"pairs": pairs, "mode": name}
                | {key: statistics.median(run[key] for run in mine) for key in FIGURES}
            )
    lines = [
        "| pairs | transport | round trips/s | p50 RTT ms | p99 RTT ms | server CPU µs/round trip"
        " | CPU ÷ inbox-asgi long poll | CPU ÷ Go | client CPU |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        same = [r for r in rows if r["pairs"] == row["pairs"]]
        poll = next(r for r in same if r["mode"] == "inbox-asgi long poll")
        go = next((r for r in same if r["mode"].startswith("Go")), None)
        cpu = row["cpu_us_per_round_trip"]
        to_go = f"{cpu / go['cpu_us_per_round_trip']:.2f}x" if go else "-"
        lines.append(
            f"| {row['pairs']} | {row['mode']} | {row['round_trips_per_s']:.0f} | {row['p50_ms']:.2f}"
            f" | {row['p99_ms']:.2f} | {cpu:.0f} | {cpu / poll['cpu_us_per_round_trip']:.2f}x"
            f" | {to_go} | {row['client_cpu_share']:.0%} |"
        )
    notes = []
    for pairs in args.pairs:
        sock = next(r for r in rows if r["pairs"] == pairs and r["mode"] == "inbox-asgi socket")
        poll = next(r for r in rows if r["pairs"] == pairs and r["mode"] == "inbox-asgi long poll")
        ratio = sock["cpu_us_per_round_trip"] / poll["cpu_us_per_round_trip"]
        notes.append(
            check(f"{pairs} pairs: socket CPU per round trip ≤ 0.6x long poll ({ratio:.2f}x)", ratio <= 0.6)
        )
        if pairs == 100:
            notes.append(
                check(
                    f"100 pairs: socket p99 ≤ long poll's ({sock['p99_ms']:.2f} vs {poll['p99_ms']:.2f} ms)",
                    sock["p99_ms"] <= poll["p99_ms"],
                )
            )
    markdown = "\n".join(lines) + (
        f"\n\n{args.rounds} rounds x {args.duration:g} s per transport, alternating, medians. Socket round"
        " trip: send → sent + message → ack with the answer's send → sent + message → ack (8 frames);"
        " long-poll round trip: 2 POSTs and 2 GETs. Servers on CPU 0, the client on CPU 1.\n"
        + "\n".join(notes)
    )
    return rows, runs, markdown


# -- burst ------------------------------------------------------------------------------------


async def burst(port: int, socket_reader: bool, socket_sender: bool, bursts: int) -> dict[str, Any]:
    """`bursts` times: 20 messages at once to one reader; how long until the 20th arrives.

    The sender POSTs them pipelined on one connection or, with `socket_sender`, writes 20
    `send` frames at once on its own socket (and waits for their 20 `sent`).
    """
    run = next(_runs)
    me, sender = f"burst{run}r", f"burst{run}s"
    posts = [build("POST", f"/inbox?to={me}", sender, BODY, JSON) for _ in range(BURST)]
    writer = await Connection.open(port)
    send = dumps({"type": "send", "ref": 1, "to": me, "body": BODY.decode(), "content_type": JSON.decode()})
    sent = 0
    all_sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if socket_sender:
        out = await WsConnection.open(port, sender)

        def on_sent(frames: list[dict[str, Any]]) -> None:
            nonlocal sent
            for frame in frames:
                if frame["type"] != "sent":
                    all_sent.set_exception(RuntimeError(f"send got {frame}"))
                    return
            sent += len(frames)
            if sent >= BURST:
                all_sent.set_result(None)

        out.listen(on_sent)
    arrived = 0
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def count_in(number: int) -> None:
        nonlocal arrived
        arrived += number
        if arrived >= BURST and not done.done():
            done.set_result(time.monotonic())

    reader_task = None
    if socket_reader:
        socket = await WsConnection.open(port, me)

        def on_frames(frames: list[dict[str, Any]]) -> None:
            messages = [frame for frame in frames if frame["type"] == "message"]
            if messages:
                socket.write(dumps({"type": "ack", "id": messages[-1]["id"]}))  # one ack per read
                count_in(len(messages))

        socket.listen(on_frames)
    else:
        reader = await Connection.open(port)
        poll = build("GET", "/inbox", me)

        async def long_poll() -> None:
            while True:
                response = await reader.request(poll)
                if response.status == 200:
                    count_in(1)
                elif response.status != 204:
                    raise RuntimeError(f"GET got {response.status}")

        reader_task = asyncio.create_task(long_poll())
        await asyncio.sleep(0.05)  # the reader's first GET has created its inbox and waits
    times = []
    for _ in range(bursts):
        arrived = sent = 0
        done = asyncio.get_running_loop().create_future()
        all_sent = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        if socket_sender:
            out.write(*[send] * BURST)
            await all_sent
        else:
            await run_all_ok(writer, posts)
        times.append(await asyncio.wait_for(done, 5) - started)
        await asyncio.sleep(0.005)
    if reader_task:
        reader_task.cancel()
        reader.close(reset=True)
    else:
        socket.close(reset=True)
    writer.close(reset=True)
    times.sort()
    return {"bursts": bursts, "p50_ms": percentile(times, 50) * 1000, "p99_ms": percentile(times, 99) * 1000}


async def run_all_ok(connection: Connection, requests: list[bytes]) -> None:
    for response in await connection.pipeline(requests):
        if response.status not in (200, 204):
            raise RuntimeError(f"POST got {response.status}")


def burst_part(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    servers = [inbox_server("-long-polling-timeout", "30")]
    modes = [
        ("inbox-asgi POST → socket", servers[0], True, False),
        ("inbox-asgi socket → socket", servers[0], True, True),
        ("inbox-asgi long poll", servers[0], False, False),
    ]
    if args.go:
        servers.append(go_server(args.go))
        modes.append(("Go original long poll", servers[1], False, False))
    runs = []
    try:
        for number in range(args.rounds):
            order = modes[number % len(modes) :] + modes[: number % len(modes)]
            for name, server, socket_reader, socket_sender in order:
                cpu = server.cpu_seconds()
                result: dict[str, Any] = run_loop(burst(server.port, socket_reader, socket_sender, 100))
                result["cpu_us_per_message"] = (server.cpu_seconds() - cpu) * 1e6 / (100 * BURST)
                result.update(mode=name, round=number)
                runs.append(result)
                print(
                    f"  burst round {number + 1}/{args.rounds} {name:22}: last of {BURST} after p50"
                    f" {result['p50_ms']:6.2f} ms p99 {result['p99_ms']:6.2f} ms"
                    f"  {result['cpu_us_per_message']:5.0f} µs CPU/message",
                    flush=True,
                )
    finally:
        for server in servers:
            server.stop()
    rows = []
    for name, *_ in modes:
        mine = [run for run in runs if run["mode"] == name]
        rows.append(
            {"mode": name}
            | {k: statistics.median(r[k] for r in mine) for k in ("p50_ms", "p99_ms", "cpu_us_per_message")}
        )
    poll = next(r for r in rows if r["mode"] == "inbox-asgi long poll")
    lines = [
        f"| reader | last of {BURST} arrives after, p50 ms | p99 ms | ÷ inbox-asgi long poll (p50)"
        " | server CPU µs/message |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['mode']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f}"
            f" | {row['p50_ms'] / poll['p50_ms']:.2f}x"
            f" | {row['cpu_us_per_message']:.0f} |"
        )
    notes = [
        check(f"{row['mode']}: ≤ 1/3 of the long-poll reader's time ({row['p50_ms'] / poll['p50_ms']:.2f}x)",
              row["p50_ms"] / poll["p50_ms"] <= 1 / 3)
        for row in rows[:2]
    ]  # fmt: skip
    markdown = "\n".join(lines) + (
        f"\n\n{args.rounds} rounds x 100 bursts per reader, alternating, medians of each round's p50/p99."
        f" A burst: {BURST} ICE candidates, POSTed pipelined on one connection (or, socket → socket,"
        f" {BURST} `send` frames in one write); timed from the first leaving to the {BURST}th message"
        " arriving at the reader (the socket reader acks once per read; the long-poll reader GETs again"
        " at once after each message).\n" + "\n".join(notes)
    )
    return rows, runs, markdown


# -- idle sockets and simultaneous pushes ----------------------------------------------------------


async def idle_sockets(server: Server, total: int, senders: int, source: str) -> dict[str, Any]:
    port = server.port
    rss_before = server.rss_kib()
    got: list[list[float]] = [[] for _ in range(total)]
    wrong: list[str] = []
    sockets: list[WsConnection] = []

    def reader(i: int, connection: WsConnection) -> None:
        def on_frames(frames: list[dict[str, Any]]) -> None:
            now = time.monotonic()
            highest = 0
            for frame in frames:
                if frame["type"] != "message":
                    continue
                highest = frame["id"]
                index, sent = frame["body"].split()
                if int(index) != i or frame["from"] != f"sender{i % senders}":
                    wrong.append(frame["body"])
                got[i].append(now - float(sent))
            if highest:
                connection.write(dumps({"type": "ack", "id": highest}))

        connection.listen(on_frames)

    for start in range(0, total, 500):  # connect in batches: the listen backlog is finite
        batch = await asyncio.gather(
            *(
                WsConnection.open(port, f"reader{i}", source=source)
                for i in range(start, min(total, start + 500))
            )
        )
        for i, connection in enumerate(batch, start):
            reader(i, connection)
        sockets += batch
    await asyncio.sleep(1)
    rss_waiting = server.rss_kib()
    attached = (await metrics(port)).get("inbox_waiting_readers", -1)

    cpu = server.cpu_seconds()
    started = time.monotonic()
    await post_to_readers(port, total, senders, source)
    deadline = time.monotonic() + 30
    while sum(1 for g in got if g) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    await asyncio.sleep(1)  # any repeat would arrive meanwhile
    cpu = server.cpu_seconds() - cpu
    after = await metrics(port)
    for connection in sockets:
        connection.close(reset=True)
    latencies = sorted(t for g in got for t in g)
    once = sum(1 for g in got if len(g) == 1)
    return {
        "sockets": total,
        "attached": attached,
        "rss_before_kib": rss_before,
        "rss_waiting_kib": rss_waiting,
        "kib_per_socket": (rss_waiting - rss_before) / total,
        "delivered": len(latencies),
        "exactly_once_readers": once,
        "wrong": wrong[:5],
        "queued_after": after.get("inbox_queued_messages", -1),
        "exactly_once": once == total
        and len(latencies) == total
        and not wrong
        and after.get("inbox_queued_messages") == 0,
        "delivery_seconds": elapsed,
        "server_cpu_us_per_push": cpu * 1e6 / total,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": (latencies[-1] if latencies else 0) * 1000,
    }


def readers_part(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    raise_open_files()
    rows = []
    for number, total in enumerate(args.readers):
        server = inbox_server("-metrics", "-max-inboxes", str(total + 1000))
        try:
            # Warm up (imports, caches) before the baseline RSS: a few sockets that get a message each.
            run_setup(server, [build("POST", f"/inbox?to=warm{i}", f"warm{i}", BODY) for i in range(200)])
            run_loop(warm_sockets(server.port, 200))
            row = run_loop(idle_sockets(server, total, args.senders, f"127.0.0.{40 + number}"))
        finally:
            server.stop()
        rows.append(row)
        print(
            f"  N={total}: {row['kib_per_socket']:.2f} KiB/socket, push p50 {row['p50_ms']:.1f} ms"
            f" p99 {row['p99_ms']:.1f} ms, exactly once: {row['exactly_once']}",
            flush=True,
        )
    lines = [
        "| idle sockets | server RSS idle → with sockets (MiB) | KiB per socket"
        " | push p50 ms | p99 ms | max ms"
        " | all N delivered in | server CPU µs/push | exactly once |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['sockets']} | {row['rss_before_kib'] / 1024:.0f} → {row['rss_waiting_kib'] / 1024:.0f}"
            f" | {row['kib_per_socket']:.2f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f}"
            f" | {row['max_ms']:.1f}"
            f" | {row['delivery_seconds']:.2f} s | {row['server_cpu_us_per_push']:.0f}"
            f" | {'yes' if row['exactly_once'] else 'NO'} ({row['exactly_once_readers']}/{row['sockets']},"
            f" {row['queued_after']:.0f} left queued) |"
        )
    ten_k = next((row for row in rows if row["sockets"] == 10000), None)
    notes = [check("≤ 12 KiB per idle socket", all(row["kib_per_socket"] <= 12 for row in rows))]
    if ten_k:
        notes.append(
            check(
                f"10k pushes all delivered exactly once (p99 {ten_k['p99_ms']:.1f} ms)", ten_k["exactly_once"]
            )
        )
    markdown = "\n".join(lines) + (
        f"\n\nOne fresh server per N. Push latency: from a POST leaving its sender to the `message` frame"
        f" arriving, {args.senders} sender connections posting back to back; each socket acks.\n"
        + "\n".join(notes)
    )
    return rows, markdown


async def warm_sockets(port: int, total: int) -> None:
    """Each takes the message waiting for it and acks it, so nothing stays queued."""
    for i in range(total):
        connection = await WsConnection.open(port, f"warm{i}")
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        connection.listen(lambda frames, got=got: got.done() or got.set_result(frames[-1]["id"]))
        connection.write(dumps({"type": "ack", "id": await asyncio.wait_for(got, 5)}))
        await asyncio.sleep(0.001)
        connection.close()


# -- entry points ------------------------------------------------------------------------------------


def run_ping_pong(args: argparse.Namespace) -> None:
    pin_client()
    rows, runs, markdown = ping_pong_part(args)
    save("sockets-ping-pong", {"rows": rows, "runs": runs}, markdown)


def run_burst(args: argparse.Namespace) -> None:
    pin_client()
    rows, runs, markdown = burst_part(args)
    save("sockets-burst", {"rows": rows, "runs": runs}, markdown)


def run_readers(args: argparse.Namespace) -> None:
    pin_client()
    rows, markdown = readers_part(args)
    save("sockets-readers", {"rows": rows}, markdown)


def run(args: argparse.Namespace) -> None:
    run_ping_pong(args)
    run_burst(args)
    run_readers(args)


# -- A/B of two source trees (like bench/ab.py --ping-pong) -----------------------------------------

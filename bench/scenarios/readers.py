"""4. waiting readers: RSS per waiting GET, then one message to every reader at once.

One fresh server per N (the largest N the hard open-file limit minus 100); delivery latency
from a POST leaving its sender to the reader's 200 arriving, and a check that every reader got
its own message exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from client import Connection, build
from harness import (
    BODY,
    Server,
    check,
    inbox_server,
    metrics,
    percentile,
    pin_client,
    raise_open_files,
    run_loop,
    run_setup,
    save,
)


async def post_to_readers(port: int, count: int, senders: int, source: str | None) -> None:
    """One message to each of `reader0`…, from `senders` connections; the body says when it left."""

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

    await asyncio.gather(*(sender(n) for n in range(senders)))

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

    started = time.monotonic()
    await post_to_readers(port, count, senders, source)
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


def run(args: argparse.Namespace) -> None:
    hard = raise_open_files()
    pin_client()
    counts = [*args.readers, hard - 100] if args.max_readers else list(args.readers)
    rows = []
    for number, count in enumerate(counts):
        server = inbox_server(
            "-metrics", "-long-polling-timeout", "300", "-max-inboxes", str(count + 1000),
            "-max-inboxes-per-ip", "0",  # every reader comes from one address
        )  # fmt: skip
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

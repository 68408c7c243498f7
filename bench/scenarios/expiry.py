"""5. expiry: 100k inboxes expiring in one cleanup pass while a probe measures event-loop stalls."""

from __future__ import annotations

import argparse
import time
from typing import Any

from client import Connection, build, run_all
from harness import Server, check, inbox_server, metrics, percentile, pin_client, run_loop, save


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


def run(args: argparse.Namespace) -> None:
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

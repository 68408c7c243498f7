"""1. pairs: POST as s_i to r_i then GET as r_i, replayed by wrk, against the reference apps.

1000 sender→receiver pairs, a 150-byte ICE candidate per POST, long polling off. With
`--go BINARY` the Go original runs as one more server in the same alternation.
"""

from __future__ import annotations

import argparse

from client import build
from harness import (
    BODY,
    JSON,
    Server,
    check,
    compare,
    go_server,
    inbox_server,
    reference_server,
    run_setup,
    save,
    summarise,
    table,
)


def pairs_requests(count: int = 1000) -> tuple[list[bytes], list[bytes]]:
    """(the replayed stream: POST as s_i to r_i, then GET as r_i; the GETs that create every r_i)."""
    stream, create = [], []
    for i in range(count):
        stream.append(build("POST", f"/inbox?to=r{i}", f"s{i}", BODY, JSON))
        stream.append(build("GET", "/inbox", f"r{i}"))
        create.append(build("GET", "/inbox", f"r{i}"))
    return stream, create


def run(args: argparse.Namespace) -> None:
    stream, create = pairs_requests()
    go = getattr(args, "go", None)

    def start() -> list[Server]:
        servers = [inbox_server("-long-polling=false"), reference_server("raw")]
        servers.append(reference_server("starlette"))
        return [*servers, go_server(go, "-long-polling=false")] if go else servers

    runs = compare(start, stream, 2, args.connections, args, lambda server: run_setup(server, create))
    rows = summarise(runs, "inbox-asgi", ["raw-asgi", "starlette", *(["inbox-go"] if go else [])])
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

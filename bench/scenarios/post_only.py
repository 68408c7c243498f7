"""2. post-only: three senders post into one inbox of capacity 10^8, against the reference apps.

The sink is drained between rounds, so a round measures the server, not a queue of a million
messages.
"""

from __future__ import annotations

import argparse
import asyncio

from client import build, run_all
from harness import BODY, JSON, Server, compare, inbox_server, reference_server, save, summarise, table


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


def run(args: argparse.Namespace) -> None:
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

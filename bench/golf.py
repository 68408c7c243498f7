"""Each fast path alone: what it buys in pairs req/s and in memory per waiting reader.

    .venv/bin/python bench/golf.py                       # every fast path, 6 rounds x 6 s
    .venv/bin/python bench/golf.py --only one-write --rounds 4

For every fast path the server runs twice, side by side and loaded in turn
(`harness.compare`, A B then B A …): as shipped (A) and with only that path
switched off (B, the same process with one monkeypatch applied by `serve`
below). Then each variant holds `--readers` parked long polls and RSS per
reader is read. A path stays in the code only if by itself it buys ≥ 5 % pairs
req/s or ≥ 0.5 KiB per waiting reader (docs/performance.md has the table).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import harness
from client import Connection, build
from scenarios.pairs import pairs_requests

#: Keep a fast path that buys at least this much by itself.
KEEP_RPS = 0.05
KEEP_KIB = 0.5


def _without_extension(key: str) -> None:
    from inbox_asgi.server.protocol import HttpProtocol

    init = HttpProtocol.__init__

    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.extensions.pop(key, None)

    HttpProtocol.__init__ = patched  # type: ignore[method-assign]


def _through_the_router() -> None:
    from starlette.applications import Starlette

    from inbox_asgi.app import InboxFirst

    InboxFirst.__call__ = Starlette.__call__  # type: ignore[method-assign]


def _patches() -> dict[str, Callable[[], None]]:
    from inbox_asgi.http.extensions import WRITE_RESPONSE

    return {
        "one-write": lambda: _without_extension(WRITE_RESPONSE),
        "inbox-first": _through_the_router,
    }


PATHS = ("one-write", "inbox-first")


def serve(variant: str, flags: list[str]) -> None:
    """Run inbox-asgi in this process with one fast path switched off ('none': as shipped)."""
    if variant != "none":
        _patches()[variant]()
    from inbox_asgi.cli import main

    main(flags)


def server(name: str, variant: str, *flags: str) -> harness.Server:
    port = harness.free_port()
    argv = [
        sys.executable, __file__, "serve", variant, "-https=false", "-bind", f"127.0.0.1:{port}",
        "-log-level", "warning", *harness.BENCH_FLAGS, *flags,
    ]  # fmt: skip
    return harness.Server(name, argv, port)


async def _park(port: int, count: int, prefix: str) -> list[Connection]:
    connections = []
    for start in range(0, count, 250):
        batch = await asyncio.gather(*(Connection.open(port) for _ in range(start, min(count, start + 250))))
        for i, connection in enumerate(batch, start):
            answer = connection.send(build("GET", "/inbox", f"{prefix}{i}"))
            answer.add_done_callback(lambda done: done.cancelled() or done.exception())  # closed at the end
        connections += batch
    return connections


def kib_per_reader(variant: str, count: int) -> float:
    """RSS growth per parked long poll, for one fresh server of this variant."""
    each = server(variant, variant, "-metrics", "-long-polling-timeout", "120")
    try:

        async def measure() -> float:
            warm = await _park(
                each.port, 200, "warm"
            )  # the first connections grow pools, not per-reader state
            deadline = time.monotonic() + 30
            while (await harness.metrics(each.port)).get("inbox_waiting_readers", 0) < 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("warm-up readers did not park")
                await asyncio.sleep(0.1)
            before = each.rss_kib()
            parked = await _park(each.port, count, "parked")
            while (await harness.metrics(each.port)).get("inbox_waiting_readers", 0) < 200 + count:
                if time.monotonic() > deadline + 60:
                    raise RuntimeError("readers did not park")
                await asyncio.sleep(0.1)
            after = each.rss_kib()
            for connection in warm + parked:
                connection.close(reset=True)
            return (after - before) / count

        return float(asyncio.run(measure()))
    finally:
        each.stop()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=PATHS, action="append")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--readers", type=int, default=3000)
    args = parser.parse_args()
    harness.pin_client()
    stream, create = pairs_requests()
    rows = []
    shipped_kib = [kib_per_reader("none", args.readers) for _ in range(2)]
    for path in args.only or PATHS:
        runs = harness.compare(
            lambda path=path: [
                server("shipped", "none", "-long-polling=false"),
                server("without", path, "-long-polling=false"),
            ],
            stream, 2, [args.connections], args, lambda each: harness.run_setup(each, create),
        )  # fmt: skip
        if any(run["errors_total"] for run in runs):
            sys.exit(f"{path}: a run had non-2xx responses or socket errors: the comparison is invalid")
        rps = {
            name: statistics.median(run["rps"] for run in runs if run["server"] == name)
            for name in ("shipped", "without")
        }
        without_kib = statistics.median(kib_per_reader(path, args.readers) for _ in range(2))
        gain = rps["shipped"] / rps["without"] - 1
        saved = without_kib - statistics.median(shipped_kib)
        keep = gain >= KEEP_RPS or saved >= KEEP_KIB
        rows.append((path, rps["shipped"], rps["without"], gain, saved, keep))
        print(
            f"{path}: pairs {rps['shipped']:.0f} vs {rps['without']:.0f} req/s without it ({gain:+.1%}); "
            f"{saved:+.2f} KiB per waiting reader saved; {'keep' if keep else 'drop'}",
            flush=True,
        )
    print()
    print("| fast path | pairs req/s with | without | gain | KiB saved per waiting reader | verdict |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for path, with_, without, gain, saved, keep in rows:
        verdict = "keep" if keep else "drop"
        print(f"| {path} | {with_:.0f} | {without:.0f} | {gain:+.1%} | {saved:+.2f} | {verdict} |")
    print(
        f"\n{args.rounds} rounds x {args.duration:g} s per server at {args.connections} connections, "
        f"medians; {args.readers} parked readers per variant (twice), "
        f"shipped: {statistics.median(shipped_kib):.2f} KiB each."
    )


if __name__ == "__main__":
    main()

"""Create and expire one million inboxes; print RSS before, at peak and after.

    python bench/memory_churn.py [--inboxes 1000000] [--rounds 2]

Runs the in-memory mailbox in this process with a fake clock (the HTTP layer
holds no per-inbox state), so the figures are the mailbox's own.
"""

from __future__ import annotations

import argparse
import gc
import time

import anyio

from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.interface import Message
from inbox_asgi.mailbox.memory import MemoryMailbox


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def churn(inboxes: int, rounds: int) -> None:
    clock = Clock()
    mailbox = MemoryMailbox(inbox_timeout=60, inbox_capacity=100, max_inboxes=inboxes, clock=clock)
    gc.collect()
    baseline = rss_mib()
    print(f"baseline RSS {baseline:.1f} MiB")
    for round_ in range(1, rounds + 1):
        started = time.perf_counter()
        for i in range(inboxes):
            await mailbox.open(Credentials(f"peer-{round_}-{i}", "password"))
            if i % 10 == 0:  # one in ten holds a small message, as mid-handshake peers do
                await mailbox.send("x", f"peer-{round_}-{i}", Message("x", b"m" * 200))
        created = time.perf_counter() - started
        peak = rss_mib()
        clock.now += 61
        started = time.perf_counter()
        await mailbox.expire_all()
        expired = time.perf_counter() - started
        gc.collect()
        after = rss_mib()
        stats = await mailbox.stats()
        assert stats.inboxes == 0 and stats.queued_messages == 0
        print(
            f"round {round_}: {inboxes} inboxes created in {created:.1f} s, peak RSS {peak:.1f} MiB "
            f"({(peak - baseline) * 1024 * 1024 / inboxes:.0f} B per inbox); expired in {expired:.2f} s; "
            f"RSS after {after:.1f} MiB ({after - baseline:+.1f} MiB vs baseline)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inboxes", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    anyio.run(churn, options.inboxes, options.rounds)


if __name__ == "__main__":
    main()

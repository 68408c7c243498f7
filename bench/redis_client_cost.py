"""Does pipeline.py pay? The Redis mailbox on its own connection vs on redis-py's asyncio client.

    .venv/bin/python bench/redis_client_cost.py [--rounds 5] [--pairs 4000] [--no-cluster] [--callgrind]

Drives a real `RedisMailbox` in this script's child processes with what a pairs
request costs (bench/run.py pairs: POST as s_i to r_i, then GET as r_i; 1000
pairs, 50 concurrent callers, long polling off): `open` + `send` for the POST,
`receive` for the GET, `run()` going so that SETTLEs are batched in the
background as in the server. Per pair that is SEND, ENTER and SETTLE (checked:
EVALSHA calls per pair are printed). Three stores under the same mailbox:

- `pipeline`: `store.Store` as shipped (pipeline.py's auto-pipelined hiredis connections);
- `redis-py`: `RedisPyStore` below, the same interface on `redis.asyncio.Redis`
  (`redis.asyncio.RedisCluster` on the cluster) with hiredis parsing, RESP2,
  no retries; batches (the background SETTLEs) go through a redis-py pipeline;
- `memory`: `MemoryMailbox` driven the same way, the mailbox work without Redis.

Pub/sub connections are pipeline.py's in both Redis variants: with every GET
finding its message, nothing is published, so they cost nothing per request.

Each run is a fresh child process pinned to CPU 0 with the redis-servers (as in
`run.py redis`); the variants alternate over `--rounds` rounds (medians). Per
pair: the child's CPU (getrusage user + system, as `time.process_time`; the
system part apart), redis-server's (INFO cpu deltas, every node), and
redis-server's reads and writes (INFO stats). `--callgrind` also counts the
child's user-space instructions per pair under valgrind (one run each, after a
shorter warm-up): deterministic, unlike CPU time on a shared machine, but blind
to system calls, and the slowed-down client sees bigger batches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
from harness import BENCH, BODY, JSON, SERVER_CPU, free_port
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry
from scenarios.redis import (
    CLUSTER_OPTIONS,
    answers,
    cluster_port,
    create_cluster,
    start_redis,
    stop_redis,
    wait_for,
)

from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.interface import Message, never_gone
from inbox_asgi.mailbox.memory import MemoryMailbox
from inbox_asgi.mailbox.redis.mailbox import RedisMailbox
from inbox_asgi.mailbox.redis.pipeline import Endpoint, NodeConnection, PushHandler
from inbox_asgi.mailbox.redis.scripts import SCRIPTS
from inbox_asgi.mailbox.redis.store import Command, Store, endpoint_from_url

PAIRS = 1000
CONCURRENCY = 50
WARM_UP = 1500  # every inbox created, then half a cycle more
CLIENTS = ("pipeline", "redis-py")


class RedisPyStore:
    """`store.Store`'s interface on redis-py's asyncio client: what issue 12 asked for."""

    def __init__(self, url: str, cluster: bool) -> None:
        self.seed = endpoint_from_url(url)
        self.scripts = tuple(script.source for script in SCRIPTS)
        self.cluster: bool | None = None
        self.generation = 0
        self._cluster = cluster
        no_retry = Retry(NoBackoff(), 0)
        self.client: Any = (
            redis.asyncio.RedisCluster.from_url(url, protocol=2, retry=no_retry)
            if cluster
            else redis.asyncio.Redis.from_url(url, protocol=2, retry=no_retry, max_connections=100)
        )

    async def ready(self) -> None:
        if self.cluster is None:
            await (self.client.initialize() if self._cluster else self.client.ping())
            self.cluster = self._cluster

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        try:
            await self.ready()
        except RedisError as error:
            return [error] * len(commands)
        if len(commands) == 1:
            return [await self._one(commands[0][1])]
        pipe = self.client.pipeline(transaction=False)
        for _, args in commands:
            pipe.execute_command(*_named(args))
        try:
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        except RedisError as error:
            return [error] * len(commands)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                replies[i] = await self._one(commands[i][1])
        return replies

    async def _one(self, args: Sequence[Any]) -> Any:
        try:
            try:
                return await self.client.execute_command(*_named(args))
            except NoScriptError:
                for source in self.scripts:
                    await self.client.script_load(source)
                return await self.client.execute_command(*_named(args))
        except RedisError as error:
            return error

    def node_for(self, key: bytes) -> Endpoint:
        if not self.cluster:
            return self.seed
        node = self.client.nodes_manager.get_node_from_slot(key_slot(key))
        return self.seed.at(node.host, node.port)

    async def subscriber(self, node: Endpoint, on_push: PushHandler) -> NodeConnection:
        return await NodeConnection.open(node, on_push)

    async def refresh(self) -> None:
        pass

    async def aclose(self) -> None:
        await self.client.aclose()


def _named(args: Sequence[Any]) -> tuple[Any, ...]:
    """The command's name as a str, as redis-py's cluster client wants it (b"EVALSHA" → "EVALSHA")."""
    name = args[0]
    return (name.decode() if isinstance(name, bytes) else name, *args[1:])


# -- the child: one store, warm-up, then the measured pairs -------------------------------------


def redis_counters(ports: Sequence[int]) -> dict[str, float]:
    """CPU seconds, reads, writes and EVALSHA calls, summed over the nodes."""
    totals = dict.fromkeys(("cpu", "reads", "writes", "evalsha"), 0.0)
    for port in ports:
        with redis.Redis(port=port) as client:
            info = client.info("all")
        totals["cpu"] += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        totals["reads"] += int(info["total_reads_processed"])
        totals["writes"] += int(info["total_writes_processed"])
        totals["evalsha"] += int(info.get("cmdstat_evalsha", {}).get("calls", 0))
    return totals


def disconnected() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()  # never: the client stays


async def drive(mailbox: Any, start: int, count: int) -> int:
    """`count` pairs (POST s_i → r_i, GET r_i) by CONCURRENCY callers; returns the messages read."""
    numbers = iter(range(start, start + count))
    read = 0

    async def caller() -> None:
        nonlocal read
        for n in numbers:
            i = n % PAIRS
            sender, recipient = f"s{i}", f"r{i}"
            await mailbox.open(Credentials(sender, "sender-password"))
            await mailbox.send(sender, recipient, Message(sender, BODY, JSON))
            message = await mailbox.receive(
                Credentials(recipient, "recipient-password"),
                wait=0,
                disconnected=disconnected,
                gone=never_gone,
            )
            read += message is not None

    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    return read


async def child(args: argparse.Namespace) -> dict[str, float]:
    limits = {"inbox_timeout": 600.0, "inbox_capacity": 100, "max_inboxes": 1_000_000}
    if args.client == "memory":
        mailbox: Any = MemoryMailbox(**limits)
    elif args.client == "pipeline":
        mailbox = RedisMailbox(Store.from_url(args.url, [s.source for s in SCRIPTS]), **limits)
    else:
        mailbox = RedisMailbox(RedisPyStore(args.url, args.on_cluster), **limits)  # type: ignore[arg-type]
    runner = asyncio.ensure_future(mailbox.run())
    if args.client != "memory":
        await mailbox.store.ready()
        for _ in range(500):
            if mailbox.subscribed:
                break
            await asyncio.sleep(0.01)
    for i in range(PAIRS):  # the recipients exist, as after run.py's set-up GETs
        await mailbox.receive(Credentials(f"r{i}", "recipient-password"), wait=0, disconnected=disconnected)
    read = await drive(mailbox, 0, WARM_UP // 3 if args.handshake else WARM_UP)  # valgrind is slow
    await asyncio.sleep(0.05)  # background settles done
    if args.handshake:
        print("warm", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    before = redis_counters(args.ports)
    start = resource.getrusage(resource.RUSAGE_SELF)
    read = await drive(mailbox, WARM_UP, args.pairs)
    await asyncio.sleep(0)
    while getattr(mailbox, "_to_settle", None):  # the last background settles belong to the measured pairs
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.02)  # and their replies (idle: no CPU)
    end = resource.getrusage(resource.RUSAGE_SELF)
    after = redis_counters(args.ports)
    if args.handshake:
        print("done", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    runner.cancel()
    await mailbox.aclose()
    if read != args.pairs:
        raise SystemExit(f"{args.client}: {read} of {args.pairs} GETs got their message")
    per = 1e6 / args.pairs
    return {
        "client_us": (end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime) * per,
        "client_sys_us": (end.ru_stime - start.ru_stime) * per,
        "redis_us": (after["cpu"] - before["cpu"]) * per,
        "evalsha": (after["evalsha"] - before["evalsha"]) / args.pairs,
        "redis_reads": (after["reads"] - before["reads"]) / args.pairs,
        "redis_writes": (after["writes"] - before["writes"]) / args.pairs,
    }


def child_main(args: argparse.Namespace) -> None:
    import uvloop  # the server's loop

    result = uvloop.run(child(args))
    print(json.dumps(result), flush=True)


# -- the parent: Redis processes, alternating rounds, callgrind ------------------------------------


def child_argv(client: str, target: dict[str, Any], pairs: int, handshake: bool = False) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", client, "--url", target["url"]]
    argv += ["--pairs", str(pairs), "--ports", *map(str, target["ports"])]
    return argv + (["--on-cluster"] if target["cluster"] else []) + (["--handshake"] if handshake else [])


def run_child(client: str, target: dict[str, Any], pairs: int) -> dict[str, float]:
    for port in target["ports"]:
        with redis.Redis(port=port) as node:
            node.flushall()
    done = subprocess.run(
        ["taskset", "-c", SERVER_CPU, *child_argv(client, target, pairs)],
        capture_output=True, text=True, timeout=300, env=child_env(),
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{client} on {target['name']} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(BENCH), "PYTHONHASHSEED": "0"}


def callgrind_total(pid: int, directory: str) -> int:
    """Dump the running callgrind's counters: the instructions so far (each dump counts since the last)."""
    subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, check=True, timeout=120)
    total = 0
    for path in Path(directory).glob("callgrind.out.*"):
        match = re.search(r"^summary: (\d+)", path.read_text(errors="replace"), re.MULTILINE)
        total += int(match[1]) if match else 0
    return total


def callgrind_run(client: str, target: dict[str, Any], pairs: int) -> float:
    """Instructions per pair of the child process (the mailbox, its store and the loop)."""
    for port in target["ports"]:
        with redis.Redis(port=port) as node:
            node.flushall()
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as directory:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={directory}/callgrind.out.%p"]
        process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *command, *child_argv(client, target, pairs, handshake=True)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=child_env(),
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        try:
            if process.stdout.readline().strip() != "warm":
                raise RuntimeError(f"{client} under callgrind did not warm up")
            before = callgrind_total(process.pid, directory)
            process.stdin.write("go\n")
            process.stdin.flush()
            if process.stdout.readline().strip() != "done":
                raise RuntimeError(f"{client} under callgrind failed")
            after = callgrind_total(process.pid, directory)
            process.stdin.write("end\n")
            process.stdin.flush()
            process.wait(120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return (after - before) / pairs


def start_targets(
    directory: Path, cluster: bool
) -> tuple[list[dict[str, Any]], list[subprocess.Popen[bytes]]]:
    single_port = free_port()
    processes = [start_redis(directory / "single", single_port)]
    targets = [{"name": "one Redis", "url": f"redis://127.0.0.1:{single_port}/0", "ports": [single_port],
                "cluster": False}]  # fmt: skip
    ports = [single_port]
    if cluster:
        cluster_ports = [cluster_port() for _ in range(3)]
        processes += [start_redis(directory / str(p), p, *CLUSTER_OPTIONS) for p in cluster_ports]
        ports += cluster_ports
    wait_for(lambda: all("PONG" in answers(p, "ping") for p in ports), "redis-server")
    if cluster:
        create_cluster(cluster_ports)
        targets.append({"name": "3-node Cluster", "url": f"redis://127.0.0.1:{cluster_ports[0]}/0",
                        "ports": cluster_ports, "cluster": True})  # fmt: skip
    return targets, processes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--pairs", type=int, default=4000, help="measured pairs per run (default 4000)")
    parser.add_argument("--no-cluster", dest="cluster", action="store_false", help="one Redis only")
    parser.add_argument("--callgrind", action="store_true", help="also instructions per pair (valgrind)")
    parser.add_argument("--callgrind-pairs", type=int, default=1000)
    parser.add_argument("--child", choices=[*CLIENTS, "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=int, nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--handshake", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--on-cluster", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.client = args.child
        child_main(args)
        return
    if shutil.which("redis-server") is None or (args.cluster and shutil.which("redis-cli") is None):
        sys.exit("needs redis-server (and redis-cli for the cluster) on PATH")
    directory = Path(tempfile.mkdtemp(prefix="bench-redis-client-"))
    targets, processes = start_targets(directory, args.cluster)
    runs: list[dict[str, Any]] = []
    try:
        for target in targets:  # warm-up (not recorded): page cache, script cache, allocator
            for client in CLIENTS:
                run_child(client, target, 500)
        for number in range(args.rounds):
            order: list[tuple[str, dict[str, Any]]] = [("memory", {"name": "no Redis", "url": "", "ports": [],
                                                                   "cluster": False})]  # fmt: skip
            for target in targets:
                clients = CLIENTS if number % 2 == 0 else CLIENTS[::-1]
                order += [(client, target) for client in clients]
            for client, target in order:
                result = run_child(client, target, args.pairs)
                runs.append({"client": client, "target": target["name"], "round": number, **result})
                print(
                    f"  round {number + 1}/{args.rounds} {target['name']:>14} {client:>8}: "
                    f"{result['client_us']:6.1f} µs client + {result['redis_us']:5.1f} µs redis-server"
                    " per pair, "
                    f"{result['evalsha']:.2f} EVALSHA, redis {result['redis_reads']:.2f} reads "
                    f"{result['redis_writes']:.2f} writes per pair",
                    flush=True,
                )
        instructions = {}
        if args.callgrind:
            for target in targets:
                for client in CLIENTS:
                    instructions[(client, target["name"])] = callgrind_run(
                        client, target, args.callgrind_pairs
                    )
                    print(
                        f"  callgrind {target['name']:>14} {client:>8}: "
                        f"{instructions[(client, target['name'])]:,.0f} instructions per pair",
                        flush=True,
                    )
    finally:
        stop_redis(processes, directory)
    report(runs, targets, instructions, args)


def report(
    runs: list[dict[str, Any]], targets: list[dict[str, Any]], instructions: dict[Any, float], args: Any
) -> None:
    def median(client: str, target: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["client"] == client and r["target"] == target)

    memory = median("memory", "no Redis", "client_us")
    print(
        f"\nPer pair (POST + GET = 2 requests), medians of {args.rounds} alternating rounds"
        f" x {args.pairs} pairs; the in-memory mailbox driven the same way: {memory:.1f} µs\n"
    )
    print("| Redis | client | client CPU µs (of which system) | redis-server CPU µs | total µs"
          " | EVALSHA | redis reads | redis writes | instructions (client) |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for target in targets:
        for client in CLIENTS:
            name = target["name"]
            cpu, server = median(client, name, "client_us"), median(client, name, "redis_us")
            counted = instructions.get((client, name))
            print(
                f"| {name} | {client} | {cpu:.1f} ({median(client, name, 'client_sys_us'):.1f}) "
                f"| {server:.1f} | {cpu + server:.1f} "
                f"| {median(client, name, 'evalsha'):.2f} | {median(client, name, 'redis_reads'):.2f} "
                f"| {median(client, name, 'redis_writes'):.2f} | {f'{counted:,.0f}' if counted else ''} |"
            )
    print("\nredis-py ÷ pipeline.py:")
    for target in targets:
        name = target["name"]
        ratios = [
            f"{key} {median('redis-py', name, key) / median('pipeline', name, key):.2f}x"
            for key in ("client_us", "redis_us")
        ]
        total = {c: median(c, name, "client_us") + median(c, name, "redis_us") for c in CLIENTS}
        extra = (total["redis-py"] - total["pipeline"]) / 2
        line = f"  {name}: {', '.join(ratios)}, total {total['redis-py'] / total['pipeline']:.2f}x"
        line += f" (+{extra:.1f} µs per request)"
        if (("redis-py", name) in instructions) and (("pipeline", name) in instructions):
            line += (
                f", instructions {instructions[('redis-py', name)] / instructions[('pipeline', name)]:.2f}x"
            )
        print(line)
    for target in targets:
        name = target["name"]
        for client in CLIENTS:
            added = (median(client, name, "client_us") - memory + median(client, name, "redis_us")) / 2
            print(f"  {name} {client}: Redis adds {added:.1f} µs per request over the in-memory mailbox")


if __name__ == "__main__":
    main()

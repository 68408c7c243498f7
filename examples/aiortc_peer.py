"""A WebRTC peer in Python (aiortc) that signals through inbox-asgi.

It speaks the protocol of public/webrtc.js (`Call`), so it can stand in for
either page of a demo:

    # camera sender with synthetic video; open receive.html?from=screen&to=camera
    python examples/aiortc_peer.py --server https://127.0.0.1:3000 --cafile cert.pem \
        camera --name camera --peer screen

    # chat peer for chat.html?room=lobby&me=alice&peer=bot (type lines; --echo answers by itself)
    python examples/aiortc_peer.py --server https://127.0.0.1:3000 --insecure \
        chat --room lobby --me bot --peer alice --echo

STUN and TURN servers come from the signaling server's /ice-servers (fresh TURN
credentials for this user; none if the server has none configured). `--relay`
uses the TURN relay only, like a page's `&relay=1`. On a server run with
-auth-secret, `--password` is the access token minted by the operator's backend.

Needs `pip install aiortc` and the client extra (`pip install inbox-asgi[client]`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
from collections.abc import Callable
from typing import Any, Literal

import aioice.ice
import av
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.sdp import candidate_from_sdp

from inbox_asgi.client import InboxClient, InboxClientError, RecipientNotFound

Role = Literal["offerer", "answerer"]


class SyntheticVideoTrack(VideoStreamTrack):
    """A bright bar sweeping over a changing background: frames a receiver can see move."""

    def __init__(self, width: int = 640, height: int = 480) -> None:
        super().__init__()
        self.width, self.height = width, height
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        luma, blue, red = frame.planes
        bar = (self.count * 8) % self.width
        row = bytearray([60]) * luma.line_size
        row[bar : bar + self.width // 8] = b"\xeb" * len(row[bar : bar + self.width // 8])
        luma.update(bytes(row) * self.height)
        chroma_rows = self.height // 2
        blue.update(bytes([(self.count * 3) % 256]) * (blue.line_size * chroma_rows))
        red.update(bytes([(128 + self.count * 5) % 256]) * (red.line_size * chroma_rows))
        self.count += 1
        frame.pts, frame.time_base = pts, time_base
        return frame


def ice_servers_from(entries: list[dict[str, Any]]) -> list[RTCIceServer]:
    """/ice-servers' JSON entries (RTCIceServer dictionaries) as aiortc's RTCIceServer.

    aiortc (aioice) uses the first STUN and the first TURN URL it can: turn: over
    udp or tcp, turns: over tcp.
    """
    return [
        RTCIceServer(urls=entry["urls"], username=entry.get("username"), credential=entry.get("credential"))
        for entry in entries
        if entry.get("urls")
    ]


async def fetch_ice_servers(client: InboxClient) -> list[RTCIceServer]:
    """The server's STUN/TURN servers for this user; none (with a warning) if it cannot say."""
    try:
        return ice_servers_from(await client.ice_servers())
    except InboxClientError as error:  # e.g. 404 from a server without /ice-servers
        print(f"no ICE servers from the signaling server ({error}): going on without", file=sys.stderr)
        return []


def relay_only(sdp: str) -> str:
    """`sdp` without its ICE candidates other than TURN relays (`typ relay`)."""
    lines = sdp.splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("a=candidate:") or " typ relay" in line)


def _candidate(data: dict[str, Any] | None) -> RTCIceCandidate | None:
    """A browser's RTCIceCandidate JSON as aiortc's candidate; None is end-of-candidates."""
    if not data or not data.get("candidate"):
        return None
    candidate = candidate_from_sdp(data["candidate"].split(":", 1)[1])
    candidate.sdpMid = data.get("sdpMid")
    candidate.sdpMLineIndex = data.get("sdpMLineIndex")
    return candidate


class Call:
    """Signals with one other peer until a connection is up (see public/webrtc.js for the protocol).

    `setup(pc)` runs for every new RTCPeerConnection before the offer or answer
    is made: add tracks or data channels there. With `relay`, only TURN relay
    candidates are used: aiortc's relay transport policy gathers no others, and
    the peer's other candidates are dropped from its SDP and trickle.
    """

    def __init__(
        self,
        client: InboxClient,
        peer: str,
        role: Role,
        setup: Callable[[RTCPeerConnection], object],
        *,
        ice_servers: list[RTCIceServer] | None = None,
        relay: bool = False,
    ) -> None:
        self.client, self.peer, self.role, self.setup = client, peer, role, setup
        self.relay = relay
        # aiortc falls back to a public STUN server unless told there is none.
        policy = RTCIceTransportPolicy.RELAY if relay else RTCIceTransportPolicy.ALL
        self.configuration = RTCConfiguration(iceServers=ice_servers or [], iceTransportPolicy=policy)
        self.pc: RTCPeerConnection | None = None
        self.session: str | None = None
        self.pending: list[RTCIceCandidate | None] = []
        self.connected = asyncio.Event()

    async def connect(self) -> RTCPeerConnection:
        """Say hello, answer the signaling until connected, then stop polling the server."""
        reader = asyncio.create_task(self._read())
        await self._hello()
        connected = asyncio.create_task(self.connected.wait())
        try:
            await asyncio.wait({reader, connected}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                reader.result()  # raises what stopped the reader
            assert self.pc is not None
            return self.pc
        finally:
            for task in (reader, connected):
                task.cancel()
            await asyncio.gather(reader, connected, return_exceptions=True)

    async def _hello(self) -> None:
        # No retry on 404: a peer that is not there yet says hello when it comes.
        with contextlib.suppress(RecipientNotFound):
            await self.client.send_json(self.peer, {"type": "hello"})

    async def _read(self) -> None:
        async for message in self.client:
            if message.sender != self.peer:
                continue
            try:
                await self.handle(message.json())
            except (ValueError, KeyError, TypeError) as error:
                print(f"ignoring bad message from {message.sender}: {error}", file=sys.stderr)

    async def handle(self, message: dict[str, Any]) -> None:
        kind, session = message.get("type"), message.get("session")
        if kind == "hello":
            if self.role == "answerer":
                await self._hello()
            else:
                pc = await self._new_pc(secrets.token_hex(4))
                await pc.setLocalDescription(await pc.createOffer())  # gathers all candidates
                await self._send_description(pc)
        elif kind == "offer" and self.role == "answerer":
            pc = await self._new_pc(session or secrets.token_hex(4))
            await pc.setRemoteDescription(RTCSessionDescription(self._filter(message["sdp"]), "offer"))
            await self._flush()
            await pc.setLocalDescription(await pc.createAnswer())
            await self._send_description(pc)
        elif self.pc is None or session not in (None, self.session):
            return  # an older session, or nothing to apply it to
        elif kind == "answer" and self.pc.signalingState == "have-local-offer":
            await self.pc.setRemoteDescription(RTCSessionDescription(self._filter(message["sdp"]), "answer"))
            await self._flush()
        elif kind == "icecandidate":
            candidate = _candidate(message.get("candidate"))
            if self.relay and candidate is not None and candidate.type != "relay":
                return
            self.pending.append(candidate)
            if self.pc.remoteDescription is not None:
                await self._flush()

    async def _new_pc(self, session: str) -> RTCPeerConnection:
        if self.pc is not None:
            await self.pc.close()
        pc = RTCPeerConnection(self.configuration)
        self.pc, self.session, self.pending = pc, session, []

        @pc.on("connectionstatechange")
        def state_changed() -> None:
            print(f"connection to {self.peer}: {pc.connectionState}", file=sys.stderr)
            if pc is self.pc and pc.connectionState == "connected":
                self.connected.set()

        self.setup(pc)
        return pc

    async def _flush(self) -> None:
        assert self.pc is not None
        pending, self.pending = self.pending, []
        for candidate in pending:
            await self.pc.addIceCandidate(candidate)

    def _filter(self, sdp: str) -> str:
        return relay_only(sdp) if self.relay else sdp

    async def _send_description(self, pc: RTCPeerConnection) -> None:
        description = pc.localDescription
        sdp = self._filter(description.sdp)
        await self.client.send_json(
            self.peer, {"type": description.type, "sdp": sdp, "session": self.session}
        )


async def send_camera(
    client: InboxClient, peer: str, *, ice_servers: list[RTCIceServer] | None = None, relay: bool = False
) -> RTCPeerConnection:
    """Offer synthetic video to `peer` (a receive.html page); returns once connected."""

    def setup(pc: RTCPeerConnection) -> None:
        pc.addTrack(SyntheticVideoTrack())

    return await Call(client, peer, "offerer", setup, ice_servers=ice_servers, relay=relay).connect()


async def open_chat(
    client: InboxClient,
    me: str,
    peer: str,
    on_message: Callable[[RTCDataChannel, str], None],
    *,
    ice_servers: list[RTCIceServer] | None = None,
    relay: bool = False,
) -> RTCDataChannel:
    """Join a chat.html conversation; returns the open data channel."""
    opened: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()
    role: Role = "offerer" if me < peer else "answerer"  # the rule chat.html uses

    def use(channel: RTCDataChannel) -> None:
        channel.on("message", lambda text: on_message(channel, str(text)))
        if channel.readyState == "open":
            _resolve(opened, channel)
        channel.on("open", lambda: _resolve(opened, channel))

    def setup(pc: RTCPeerConnection) -> None:
        if role == "offerer":
            use(pc.createDataChannel("chat"))
        else:
            pc.on("datachannel", use)

    await Call(client, peer, role, setup, ice_servers=ice_servers, relay=relay).connect()
    return await opened


def _resolve(future: asyncio.Future[RTCDataChannel], channel: RTCDataChannel) -> None:
    if not future.done():
        future.set_result(channel)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default="https://127.0.0.1:3000")
    parser.add_argument(
        "--password",
        default=secrets.token_hex(12),
        help="inbox password, or the access token for -auth-secret",
    )
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--cafile", help="PEM certificate(s) to trust, e.g. the server's self-signed one")
    trust.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    parser.add_argument(
        "--loopback",
        action="store_true",
        help="offer only 127.0.0.1 as ICE candidate: both peers on this machine, no network needed",
    )
    parser.add_argument("--relay", action="store_true", help="use only the TURN relay the server hands out")
    modes = parser.add_subparsers(dest="mode", required=True)
    camera = modes.add_parser("camera", help="send synthetic video to receive.html")
    camera.add_argument("--name", default="sender")
    camera.add_argument("--peer", default="receiver")
    chat = modes.add_parser("chat", help="talk to chat.html over a data channel")
    chat.add_argument("--room", required=True)
    chat.add_argument("--me", default="bot")
    chat.add_argument("--peer", default="alice")
    chat.add_argument("--echo", action="store_true", help="answer every message instead of reading stdin")
    args = parser.parse_args()

    if args.loopback:  # aioice leaves 127.0.0.1 out of its host candidates by default
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    verify: str | bool = args.cafile or not args.insecure
    name = args.name if args.mode == "camera" else f"{args.room}/{args.me}"
    async with InboxClient(args.server, name, args.password, verify=verify) as client:
        ice_servers = await fetch_ice_servers(client)
        if args.relay and not any(_is_turn(server) for server in ice_servers):
            print("--relay: the server hands out no TURN server, so no connection will come", file=sys.stderr)
        if args.mode == "camera":
            await send_camera(client, args.peer, ice_servers=ice_servers, relay=args.relay)
            print("connected: streaming until Ctrl-C", file=sys.stderr)
            await asyncio.Event().wait()

        def show(channel: RTCDataChannel, text: str) -> None:
            print(f"{args.peer}: {text}", flush=True)
            if args.echo:
                channel.send(f"echo: {text}")

        channel = await open_chat(
            client, name, f"{args.room}/{args.peer}", show, ice_servers=ice_servers, relay=args.relay
        )
        if args.echo:
            print("connected: echoing until Ctrl-C", file=sys.stderr)
            await asyncio.Event().wait()
        print("connected: type lines to send", file=sys.stderr)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            channel.send(line.rstrip("\n"))


def _is_turn(server: RTCIceServer) -> bool:
    urls = [server.urls] if isinstance(server.urls, str) else server.urls
    return any(url.startswith(("turn:", "turns:")) for url in urls)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())

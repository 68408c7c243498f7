"""Peers that may only talk through a real TURN relay (coturn), with credentials from /ice-servers.

The signaling server is started with `-turn-urls turn:127.0.0.1:PORT -turn-secret S`
(S being coturn's static-auth-secret): the peers are never told the secret, only
the time-limited credentials the server derives from it for their username.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from inbox_asgi.client import InboxClient

from ..support import ServerProcess
from ..turn_support import MAX_RELAY_PORT, MIN_RELAY_PORT, TurnServer
from .conftest import EXAMPLE
from .pages import Inbox, assert_video_plays, chat_say, selected_pairs, start_camera, unique, wait_chat_line

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("loopback_ice")]

Opener = Callable[..., Any]


def relayed_by(turn: TurnServer, candidate: dict[str, Any]) -> bool:
    """A relay candidate allocated on our coturn (its relay ports, on 127.0.0.1)."""
    return (
        candidate["type"] == "relay"
        and candidate["address"] == "127.0.0.1"
        and MIN_RELAY_PORT <= candidate["port"] <= MAX_RELAY_PORT
    )


def client_for(server: ServerProcess, name: str) -> InboxClient:
    return InboxClient(server.base_url, name, "pw-" + name, verify=server.ca_path or False)


def nominated(channel: Any) -> list[dict[str, Any]]:
    """The candidate pairs an aiortc data channel's ICE connection uses (aioice's nominated pairs)."""
    connection = channel.transport.transport.transport._connection
    pairs = []
    for pair in connection._nominated.values():
        for side, candidate in (("local", pair.local_candidate), ("remote", pair.remote_candidate)):
            pairs.append(
                {"side": side, "type": candidate.type, "address": candidate.host, "port": candidate.port}
            )
    return pairs


async def test_aiortc_peers_talk_through_coturn_only(
    peer: ModuleType, turn: TurnServer, turn_signaling: ServerProcess
) -> None:
    room = unique("room")
    a, b = f"{room}/a", f"{room}/b"
    heard_by_a, heard_by_b = Inbox(), Inbox()
    async with client_for(turn_signaling, a) as client_a, client_for(turn_signaling, b) as client_b:
        entries = await client_a.ice_servers()
        assert [sorted(entry) for entry in entries] == [["credential", "urls", "username"]]
        assert entries[0]["urls"] == [turn.url]
        assert re.fullmatch(rf"\d+:{re.escape(a)}", entries[0]["username"])
        assert "secret" not in str(entries) and turn.secret not in str(entries)

        async with asyncio.timeout(30):
            channel_a, channel_b = await asyncio.gather(
                peer.open_chat(
                    client_a, a, b, heard_by_a, ice_servers=peer.ice_servers_from(entries), relay=True
                ),
                peer.open_chat(
                    client_b, b, a, heard_by_b, ice_servers=await peer.fetch_ice_servers(client_b), relay=True
                ),
            )
    try:
        channel_a.send("through the relay")
        channel_b.send("and back")
        await heard_by_b.wait_for("through the relay")
        await heard_by_a.wait_for("and back")
        for channel in (channel_a, channel_b):
            pairs = nominated(channel)
            assert pairs, "no nominated candidate pair"
            assert all(relayed_by(turn, candidate) for candidate in pairs), pairs
        # The two sides' relay addresses are each other's remote candidates: both go through coturn.
        ports_a = {c["side"]: c["port"] for c in nominated(channel_a)}
        ports_b = {c["side"]: c["port"] for c in nominated(channel_b)}
        assert ports_a == {"local": ports_b["remote"], "remote": ports_b["local"]}
    finally:
        await asyncio.gather(stop(channel_a), stop(channel_b))


async def stop(channel: Any) -> None:
    """Close an aiortc data channel's transports down to ICE, which frees its TURN allocation."""
    channel.close()
    sctp = channel.transport
    await sctp.stop()
    await sctp.transport.stop()
    await sctp.transport.transport.stop()


async def gathered_candidate_types(peer: ModuleType, entries: list[dict[str, Any]]) -> list[str]:
    """The candidate types an aiortc offer gathers with `entries` as ICE servers and the relay policy."""
    from aiortc import RTCConfiguration, RTCIceTransportPolicy, RTCPeerConnection

    configuration = RTCConfiguration(
        iceServers=peer.ice_servers_from(entries), iceTransportPolicy=RTCIceTransportPolicy.RELAY
    )
    pc = RTCPeerConnection(configuration)
    try:
        pc.createDataChannel("probe")
        async with asyncio.timeout(20):
            await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate
        return re.findall(r"^a=candidate:.* typ (\w+)", pc.localDescription.sdp, re.MULTILINE)
    finally:
        await pc.close()


async def test_wrong_turn_secret_gets_no_relay_candidate(
    peer: ModuleType,
    turn: TurnServer,
    turn_signaling: ServerProcess,
    real_server: Callable[..., ServerProcess],
) -> None:
    misconfigured = real_server("-turn-urls", turn.url, "-turn-secret", "not-" + turn.secret)
    name = unique("wrong")
    async with client_for(misconfigured, name) as wrong, client_for(turn_signaling, name) as right:
        refused = await gathered_candidate_types(peer, await wrong.ice_servers())
        accepted = await gathered_candidate_types(peer, await right.ice_servers())
    assert refused == []
    assert accepted == ["relay"]  # the same request with the right secret's credentials: one relay
    # coturn says why: "ERROR: check_stun_auth: Cannot find credentials of user <EXPIRY:NAME>".
    assert any("ERROR" in line and f":{name}" in line for line in turn.log().splitlines()), turn.log()


async def test_chat_pages_talk_through_coturn_only(
    turn: TurnServer, turn_signaling: ServerProcess, new_page: Opener, screenshot: Any
) -> None:
    room = unique("room")
    url = f"{turn_signaling.base_url}/chat.html?room={room}&relay=1"
    alice, bob = await asyncio.gather(
        new_page(f"{url}&me=alice&peer=bob"), new_page(f"{url}&me=bob&peer=alice")
    )

    await chat_say(alice, "relayed hello")
    await wait_chat_line(bob, "them", "relayed hello")
    await chat_say(bob, "relayed answer")
    await wait_chat_line(alice, "them", "relayed answer")

    for page in (alice, bob):
        assert (
            await page.evaluate("demo.call.peer.connection.getConfiguration().iceTransportPolicy") == "relay"
        )
        stats = await selected_pairs(page)
        assert stats["pairs"], stats
        for pair in stats["pairs"]:
            assert relayed_by(turn, pair["local"]) and relayed_by(turn, pair["remote"]), pair
            assert pair["local"]["url"] == turn.url
        assert set(stats["local"]) == {"relay"}
    assert await alice.text_content("#error") == ""
    await screenshot(alice, "alice-relayed")


async def test_video_plays_through_coturn_only(
    turn: TurnServer, turn_signaling: ServerProcess, new_page: Opener, screenshot: Any
) -> None:
    camera, screen = unique("camera"), unique("screen")
    base = turn_signaling.base_url
    receiver = await new_page(f"{base}/receive.html?from={screen}&to={camera}&relay=1")
    sender = await new_page(f"{base}/send.html?from={camera}&to={screen}&relay=1")

    await start_camera(sender)
    await assert_video_plays(receiver)

    for page in (sender, receiver):
        stats = await selected_pairs(page)
        assert stats["pairs"], stats
        for pair in stats["pairs"]:
            assert relayed_by(turn, pair["local"]) and relayed_by(turn, pair["remote"]), pair
        assert set(stats["local"]) == {"relay"}
    receiving = (await selected_pairs(receiver))["pairs"]
    assert sum(pair["bytesReceived"] for pair in receiving) > 10_000  # video, not just ICE checks
    await screenshot(receiver, "receive-relayed")


async def test_example_program_with_relay_chats_with_a_relay_page(
    turn: TurnServer, turn_signaling: ServerProcess, new_page: Opener
) -> None:
    room = unique("room")
    program = await asyncio.create_subprocess_exec(
        *[
            sys.executable,
            str(EXAMPLE),
            "--server",
            turn_signaling.base_url,
            "--cafile",
            str(turn_signaling.ca_path),
        ],
        *["--relay", "chat", "--room", room, "--me", "bot", "--peer", "alice", "--echo"],
        stdout=asyncio.subprocess.PIPE,
    )
    assert program.stdout is not None
    try:
        page = await new_page(f"{turn_signaling.base_url}/chat.html?room={room}&me=alice&peer=bot&relay=1")
        await chat_say(page, "ping")
        await wait_chat_line(page, "them", "echo: ping")
        async with asyncio.timeout(10):
            assert await program.stdout.readline() == b"alice: ping\n"
        stats = await selected_pairs(page)
        assert stats["pairs"], stats
        for pair in stats["pairs"]:
            assert relayed_by(turn, pair["local"]) and relayed_by(turn, pair["remote"]), pair
    finally:
        program.terminate()
        await program.wait()


async def test_a_peer_goes_on_without_ice_servers_when_it_cannot_get_them(
    server: ServerProcess, new_page: Opener
) -> None:
    page = await new_page(f"{server.base_url}/")
    await page.add_script_tag(url="signal_channel.js")
    await page.add_script_tag(url="webrtc.js")
    result = await page.evaluate(
        """async () => {
          // Nothing listens on port 9: /ice-servers cannot be fetched.
          const server = 'https://127.0.0.1:9';
          const channel = new SignalingChannel({server, from: 'x', autoConnect: false});
          const peer = new Peer(channel, {iceServers: 'auto'});
          const error = new Promise((resolve) =>
            peer.addEventListener('error', (e) => resolve(e.detail.message)));
          peer.createDataChannel('x');
          await peer.ready;
          const result = {
            message: await error, servers: peer.connection.getConfiguration().iceServers,
            state: peer.connection.signalingState,
          };
          peer.close();
          return result;
        }"""
    )
    assert result["message"].startswith("ICE servers: network error")
    assert result["servers"] == []
    assert result["state"] == "stable"  # not closed: the peer carries on without ICE servers

"""aiortc peers (examples/aiortc_peer.py) with each other and with the demo pages in Chromium."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any

import pytest

from inbox_asgi.client import InboxClient

from ..support import ServerProcess
from .conftest import EXAMPLE
from .pages import Inbox, assert_video_plays, chat_say, unique, wait_chat_line

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("loopback_ice")]

Opener = Callable[..., Any]
ClientFactory = Callable[[str], InboxClient]


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[ClientFactory]:
    """Factory: an InboxClient for `name`, verifying the server's certificate."""
    clients: list[InboxClient] = []

    def make(name: str) -> InboxClient:
        clients.append(InboxClient(server.base_url, name, "pw-" + name, verify=server.ca_path or False))
        return clients[-1]

    yield make
    for made in clients:
        await made.aclose()


async def test_aiortc_peers_talk_over_a_data_channel(peer: ModuleType, client: ClientFactory) -> None:
    room = unique("room")
    heard_by_a, heard_by_b = Inbox(), Inbox()

    async with asyncio.timeout(30):
        channel_a, channel_b = await asyncio.gather(
            peer.open_chat(client(f"{room}/a"), f"{room}/a", f"{room}/b", heard_by_a),
            peer.open_chat(client(f"{room}/b"), f"{room}/b", f"{room}/a", heard_by_b),
        )
    try:
        channel_a.send("from a")
        channel_b.send("from b")
        await heard_by_b.wait_for("from a")
        await heard_by_a.wait_for("from b")
        assert heard_by_a.messages == ["from b"]
        assert heard_by_b.messages == ["from a"]
    finally:
        channel_a.close()
        channel_b.close()


async def test_aiortc_camera_plays_in_receive_page(
    peer: ModuleType, client: ClientFactory, server: ServerProcess, new_page: Opener, screenshot: Any
) -> None:
    camera, screen = unique("camera"), unique("screen")
    receiver = await new_page(f"{server.base_url}/receive.html?from={screen}&to={camera}")

    async with asyncio.timeout(30):
        pc = await peer.send_camera(client(camera), screen)
    try:
        progress = await assert_video_plays(receiver)
        assert progress["width"] == 640
        assert await receiver.text_content("#state") == "connected"
        await screenshot(receiver, "receive-from-aiortc")
    finally:
        await pc.close()


async def test_chat_page_talks_with_aiortc_peer(
    peer: ModuleType, client: ClientFactory, server: ServerProcess, new_page: Opener, screenshot: Any
) -> None:
    room = unique("room")
    heard = Inbox()

    def echo(channel: Any, text: str) -> None:
        heard(channel, text)
        channel.send(f"echo: {text}")

    page = await new_page(f"{server.base_url}/chat.html?room={room}&me=alice&peer=bot")
    async with asyncio.timeout(30):
        channel = await peer.open_chat(client(f"{room}/bot"), f"{room}/bot", f"{room}/alice", echo)
    try:
        await chat_say(page, "hello python")
        await heard.wait_for("hello python")
        await wait_chat_line(page, "them", "echo: hello python")
        channel.send("hello browser")
        await wait_chat_line(page, "them", "hello browser")
        await screenshot(page, "chat-with-aiortc")
    finally:
        channel.close()


async def test_example_program_chats_with_a_python_peer(
    peer: ModuleType, client: ClientFactory, server: ServerProcess
) -> None:
    room = unique("room")
    program = await asyncio.create_subprocess_exec(
        *[sys.executable, str(EXAMPLE), "--server", server.base_url, "--cafile", str(server.ca_path)],
        *["--loopback", "chat", "--room", room, "--me", "bot", "--peer", "alice", "--echo"],
        stdout=asyncio.subprocess.PIPE,
    )
    assert program.stdout is not None
    heard = Inbox()
    try:
        async with asyncio.timeout(30):
            channel = await peer.open_chat(client(f"{room}/alice"), f"{room}/alice", f"{room}/bot", heard)
        channel.send("ping")
        await heard.wait_for("echo: ping")
        async with asyncio.timeout(10):
            assert await program.stdout.readline() == b"alice: ping\n"
        channel.close()
    finally:
        program.terminate()
        await program.wait()

"""The demo pages against each other in Chromium, through a real inbox-asgi over HTTPS."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ..support import ServerProcess
from .conftest import PUBLIC
from .pages import (
    assert_video_plays,
    chat_lines,
    chat_say,
    start_camera,
    unique,
    wait_chat_line,
    wait_state,
)

pytestmark = pytest.mark.anyio

Opener = Callable[..., Any]


async def test_camera_reaches_the_receiver(server: ServerProcess, new_page: Opener, screenshot: Any) -> None:
    camera, screen = unique("camera"), unique("screen")
    receiver = await new_page(f"{server.base_url}/receive.html?from={screen}&to={camera}")
    sender = await new_page(f"{server.base_url}/send.html?from={camera}&to={screen}")

    await start_camera(sender)
    await assert_video_plays(receiver)

    await wait_state(sender, "connected")
    assert await receiver.text_content("#state") == "connected"
    assert await receiver.text_content("#error") == ""
    await screenshot(sender, "send")
    await screenshot(receiver, "receive")


async def test_video_keeps_playing_when_the_server_stops(
    real_server: Callable[..., ServerProcess], new_page: Opener, screenshot: Any
) -> None:
    server = real_server("-public", str(PUBLIC))  # its own: this one gets killed
    camera, screen = unique("camera"), unique("screen")
    # Sender first this time: its hello finds nobody, the receiver's hello starts the call.
    sender = await new_page(f"{server.base_url}/send.html?from={camera}&to={screen}")
    await start_camera(sender)
    receiver = await new_page(f"{server.base_url}/receive.html?from={screen}&to={camera}")
    await assert_video_plays(receiver)
    await receiver.evaluate("window.loadedOnce = true")  # gone if the page reloads

    server.stop(signal.SIGKILL)  # as abrupt as it gets; SIGTERM would be no different to the peers
    assert server.process.poll() is not None

    await assert_video_plays(receiver)
    assert await receiver.evaluate("window.loadedOnce") is True
    assert await receiver.evaluate("demo.call.status") == "connected"
    assert await sender.evaluate("demo.call.status") == "connected"
    await screenshot(receiver, "receive-after-server-stop")


async def test_chat_between_two_pages(server: ServerProcess, new_page: Opener, screenshot: Any) -> None:
    room = unique("room")
    alice, bob = await asyncio.gather(
        new_page(f"{server.base_url}/chat.html?room={room}&me=alice&peer=bob"),
        new_page(f"{server.base_url}/chat.html?room={room}&me=bob&peer=alice"),
    )

    await chat_say(alice, "hello bob")
    await wait_chat_line(bob, "them", "hello bob")
    await chat_say(bob, "hi alice ✓")
    await wait_chat_line(alice, "them", "hi alice ✓")

    assert await alice.text_content("#state") == "connected"
    assert await chat_lines(bob) == ["alice joined", "hello bob", "hi alice ✓"]
    await screenshot(alice, "alice")
    await screenshot(bob, "bob")


async def test_two_pairs_on_one_server_do_not_cross_talk(
    server: ServerProcess, new_page: Opener, screenshot: Any
) -> None:
    rooms = [unique("room"), unique("room")]
    keys = [(room, me, peer) for room in rooms for me, peer in (("alice", "bob"), ("bob", "alice"))]
    opened = await asyncio.gather(
        *(new_page(f"{server.base_url}/chat.html?room={room}&me={me}&peer={peer}") for room, me, peer in keys)
    )
    pages = {(room, me): page for (room, me, _), page in zip(keys, opened, strict=True)}
    for room in rooms:
        await chat_say(pages[room, "alice"], f"secret of {room}")
    for room in rooms:
        await wait_chat_line(pages[room, "bob"], "them", f"secret of {room}")

    for (room, _), page in pages.items():
        lines = " ".join(await chat_lines(page))
        other = next(r for r in rooms if r != room)
        assert f"secret of {other}" not in lines
    await screenshot(pages[rooms[0], "bob"], "first-pair")
    await screenshot(pages[rooms[1], "bob"], "second-pair")


async def test_a_taken_name_is_explained_on_the_page(server: ServerProcess, new_page: Opener) -> None:
    room = unique("room")
    await new_page(f"{server.base_url}/chat.html?room={room}&me=alice&peer=bob&password=first")
    second = await new_page(f"{server.base_url}/chat.html?room={room}&me=alice&peer=bob&password=other")
    await second.wait_for_function("document.getElementById('error').textContent.includes('taken')")
    assert await second.evaluate("demo.channel.connected") is False


async def test_index_links_both_pages_of_a_fresh_pair(
    server: ServerProcess, new_page: Opener, screenshot: Any
) -> None:
    index = await new_page(f"{server.base_url}/")
    send = await index.get_attribute("a#send", "href")
    receive = await index.get_attribute("a#receive", "href")
    assert send and receive
    sender = parse_qs(urlsplit(send).query)
    receiver = parse_qs(urlsplit(receive).query)
    assert sender["from"] == receiver["to"] and sender["to"] == receiver["from"]
    assert sender["from"] != ["sender"]  # not the shared defaults
    assert await index.get_attribute("a#chat", "href") == "chat.html"
    await screenshot(index, "index")

"""signal_channel.js on its own, in Chromium against a real server: retries, order, errors, CORS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from inbox_asgi.client import InboxClient, RecipientNotFound

from ..support import ServerProcess
from .conftest import PUBLIC
from .pages import chat_say, unique, wait_chat_line

pytestmark = pytest.mark.anyio

Opener = Callable[..., Any]

# Runs `body` (an async function body using a, b) with a deadline, so a broken client fails, not hangs.
WITH_DEADLINE = """async ([a, b]) => {
  const deadline = new Promise((_, reject) => setTimeout(() => reject(new Error('deadline passed')), 15000));
  return Promise.race([deadline, (async () => { %s })()]);
}"""


async def run_script(new_page: Opener, server: ServerProcess, body: str, a: str, b: str) -> Any:
    """Run `body` in a page of `server` that loaded signal_channel.js; `a` and `b` are peer names."""
    page = await new_page(f"{server.base_url}/")
    await page.add_script_tag(url="signal_channel.js")
    return await page.evaluate(WITH_DEADLINE % body, [a, b])


async def test_sends_wait_for_the_peer_and_arrive_in_order(server: ServerProcess, new_page: Opener) -> None:
    a = unique("a")
    received = await run_script(
        new_page,
        server,
        """
        const sender = new SignalingChannel({from: a, to: b, password: 'pa', autoConnect: false});
        // b has no inbox yet: the first send gets 404s and retries, the rest queue behind it.
        const sending = Promise.all([1, 2, 3, 4, 5].map((n) => sender.send({type: 'count', n})));
        const reader = new SignalingChannel({from: b, password: 'pb'});
        const received = [];
        const all = new Promise((resolve) => reader.addEventListener('count', (e) => {
          received.push([e.from, e.detail.n]);
          if (received.length === 5) resolve();
        }));
        await sending;
        await all;
        reader.disconnect();
        return received;
        """,
        a,
        unique("b"),
    )
    assert received == [[a, n] for n in range(1, 6)]


async def test_refusals_are_reported_not_retried(server: ServerProcess, new_page: Opener) -> None:
    result = await run_script(
        new_page,
        server,
        """
        const owner = new SignalingChannel({from: b, password: 'right'});
        await owner.send({type: 'hello'}, {to: b});  // b's inbox now exists (a message to itself)
        owner.disconnect();
        const imposter = new SignalingChannel({from: b, password: 'wrong'});
        const status401 = await new Promise((resolve) =>
          imposter.addEventListener('error', (e) => resolve(e.detail.status), {once: true}));
        let status404 = null;
        try {
          const lonely = new SignalingChannel({from: a, autoConnect: false});
          await lonely.send({}, {to: 'nobody-' + a, retry: false});
        } catch (e) {
          status404 = e.status;
        }
        return {status401, polling: imposter.connected, status404};
        """,
        unique("a"),
        unique("b"),
    )
    assert result == {"status401": 401, "polling": False, "status404": 404}


async def test_full_inbox_is_retried_after_retry_after(
    real_server: Callable[..., ServerProcess], new_page: Opener
) -> None:
    server = real_server("-public", str(PUBLIC), "-inbox-capacity", "1")
    result = await run_script(
        new_page,
        server,
        """
        let refused;
        const sawRefusal = new Promise((resolve) => { refused = resolve; });
        const fetchOriginal = window.fetch;
        window.fetch = async (...args) => {
          const response = await fetchOriginal(...args);
          if (response.status === 503) refused(Date.now());
          return response;
        };
        const reader = new SignalingChannel({from: a, password: 'pa', autoConnect: false});
        await reader.send({type: 'first'}, {to: a});  // fills a's inbox (capacity 1)
        const sender = new SignalingChannel({from: b, to: a, password: 'pb', autoConnect: false});
        const sent = sender.send({type: 'second'});
        const refusedAt = await sawRefusal;
        const arrived = new Promise((resolve) =>
          reader.addEventListener('second', () => resolve(Date.now())));
        reader.connect();  // makes room; the sender tries again after Retry-After (1 s)
        await sent;
        const arrivedAt = await arrived;
        reader.disconnect();
        return arrivedAt - refusedAt;
        """,
        unique("a"),
        unique("b"),
    )
    assert 900 <= result < 10_000


async def test_pages_signal_through_another_origin_with_cors(
    server: ServerProcess, real_server: Callable[..., ServerProcess], new_page: Opener
) -> None:
    signaling = real_server("-public", str(PUBLIC), "-cors", "true")
    assert signaling.base_url != server.base_url
    room = unique("room")
    url = f"{server.base_url}/chat.html?room={room}&server={signaling.base_url}"
    alice = await new_page(f"{url}&me=alice&peer=bob")
    bob = await new_page(f"{url}&me=bob&peer=alice")

    await chat_say(alice, "across origins")
    await wait_chat_line(bob, "them", "across origins")

    # The inboxes live on the signaling server, not on the one that served the pages.
    async with InboxClient(signaling.base_url, unique("probe"), "pw", verify=signaling.verify) as probe:
        await probe.send(f"{room}/alice", "x")
    async with InboxClient(server.base_url, unique("probe"), "pw", verify=server.verify) as probe:
        with pytest.raises(RecipientNotFound):
            await probe.send(f"{room}/alice", "x")

"""signal_channel.js on its own, in Chromium against a real server: retries, order, errors, CORS."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from inbox_asgi import tokens
from inbox_asgi.client import InboxClient, RecipientNotFound

from ..support import ServerProcess, start_server
from .conftest import PUBLIC
from .pages import chat_say, unique, wait_chat_line

pytestmark = pytest.mark.anyio

Opener = Callable[..., Any]

# Runs `body` (an async function body using a, b, extra) with a deadline, so a broken client fails, not hangs.
WITH_DEADLINE = """async ([a, b, extra]) => {
  const deadline = new Promise((_, reject) => setTimeout(() => reject(new Error('deadline passed')), 15000));
  return Promise.race([deadline, (async () => { %s })()]);
}"""


async def run_script(
    new_page: Opener, server: ServerProcess, body: str, a: str, b: str, extra: Any = None
) -> Any:
    """Run `body` in a page of `server` that loaded signal_channel.js; `a` and `b` are peer names."""
    page = await new_page(f"{server.base_url}/")
    await page.add_script_tag(url="signal_channel.js")
    return await page.evaluate(WITH_DEADLINE % body, [a, b, extra])


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


AUTH_SECRET = "browser-test-auth-secret"


@pytest.fixture(scope="module")
def token_server(
    loopback_only: bool, tls_files: tuple[str, str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server that lets in access-token holders only (-auth-secret)."""
    flags = ["-public", str(PUBLIC), "-auth-secret", AUTH_SECRET]
    server = start_server(flags, cwd=tmp_path_factory.mktemp("token-server"), tls=tls_files)
    yield server
    server.stop()


def token(name: str, ttl: float = 600) -> str:
    return tokens.issue(AUTH_SECRET, name, ttl)


async def test_a_password_function_renews_an_expired_token(
    token_server: ServerProcess, new_page: Opener
) -> None:
    a, b = unique("a"), unique("b")
    expired = tokens.issue(AUTH_SECRET, a, ttl=60, now=time.time() - 3600)
    result = await run_script(
        new_page,
        token_server,
        """
        const [expired, tokenA, tokenB] = extra;
        const bob = new SignalingChannel({from: b, to: a, password: tokenB});  // a plain string token
        bob.addEventListener('ping', (e) => bob.send({type: 'pong', n: e.detail.n}));
        let calls = 0;
        const errors = [];
        // Like a page asking its backend: the first answer is a token that has run out meanwhile.
        const alice = new SignalingChannel({
          from: a, to: b, password: async () => (calls++ === 0 ? expired : tokenA),
        });
        alice.addEventListener('error', (e) => errors.push(e.detail.status));
        const pong = new Promise((resolve) => alice.addEventListener('pong', (e) => resolve(e.detail.n)));
        await alice.send({type: 'ping', n: 7});  // refused along with alice's first poll: one renewal
        const n = await pong;
        alice.disconnect();
        bob.disconnect();
        return {n, calls, errors};
        """,
        a,
        b,
        [expired, token(a), token(b)],
    )
    assert result == {"n": 7, "calls": 2, "errors": []}


async def test_a_forged_token_is_reported_after_one_renewal(
    token_server: ServerProcess, new_page: Opener
) -> None:
    a = unique("a")
    forged = tokens.issue("not-the-" + AUTH_SECRET, a, 600)
    result = await run_script(
        new_page,
        token_server,
        """
        let calls = 0;
        const channel = new SignalingChannel({from: a, password: () => { calls++; return extra; }});
        const [status, callsAtError] = await new Promise((resolve) => channel.addEventListener(
          'error', (e) => resolve([e.detail.status, calls]), {once: true}));
        let sendStatus = null;
        try {
          await channel.send({type: 'x'}, {to: a, retry: false});
        } catch (e) {
          sendStatus = e.status;
        }
        return {status, callsAtError, polling: channel.connected, sendStatus};
        """,
        a,
        unique("b"),
        forged,
    )
    assert result == {"status": 401, "callsAtError": 2, "polling": False, "sendStatus": 401}


async def test_demo_pages_take_a_token_as_password(token_server: ServerProcess, new_page: Opener) -> None:
    room = unique("room")
    url = f"{token_server.base_url}/chat.html?room={room}"
    alice = await new_page(f"{url}&me=alice&peer=bob&password={quote(token(f'{room}/alice'))}")
    bob = await new_page(f"{url}&me=bob&peer=alice&password={quote(token(f'{room}/bob'))}")
    await chat_say(alice, "token holders only")
    await wait_chat_line(bob, "them", "token holders only")

    # A token for another name (or none: each tab's made-up password) is refused and explained.
    stranger = await new_page(f"{url}&me=carol&peer=dave&password={quote(token(f'{room}/alice'))}")
    await stranger.wait_for_function("document.getElementById('error').textContent.includes('token')")
    assert await stranger.evaluate("demo.channel.connected") is False

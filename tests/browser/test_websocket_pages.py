"""The WebSocket transport (/inbox/ws) in Chromium: the demo pages and signal_channel.js.

Why the socket exists: a browser opens at most six HTTP/1.1 connections per
origin (per profile: one playwright context), and a long poll holds one for up
to -long-polling-timeout. Sixteen long-polling tabs in one browser therefore
stall (requests, page loads included, queue behind the polls), while sixteen
tabs on sockets do not, since WebSockets do not count against that limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from inbox_asgi import tokens

from ..support import ServerProcess, UpgradeStrippingProxy, start_server
from .conftest import PUBLIC
from .pages import chat_say, chat_submit, unique, wait_chat_line, wait_chat_lines, wait_states

pytestmark = pytest.mark.anyio

PAIRS = 8


@pytest.fixture
async def context(browser: Any) -> AsyncIterator[Any]:
    """One browser context for every page of a test: its pages share one HTTP connection pool."""
    context = await browser.new_context(ignore_https_errors=True, viewport={"width": 900, "height": 700})
    yield context
    await context.close()


async def open_page(context: Any, url: str, **goto: Any) -> Any:
    page = await context.new_page()
    label = url.rsplit("/", 1)[-1][:60]
    page.on("console", lambda message: print(f"[{label}] {message.type}: {message.text}"))
    page.on("pageerror", lambda error: print(f"[{label}] page error: {error}"))
    await page.goto(url, **goto)
    return page


def chat_urls(base_url: str, room: str, transport: str | None) -> tuple[str, str]:
    extra = f"&transport={transport}" if transport else ""
    url = f"{base_url}/chat.html?room={room}{extra}"
    return f"{url}&me=alice&peer=bob", f"{url}&me=bob&peer=alice"


async def transport_shown(page: Any) -> str:
    text: str = await page.eval_on_selector("#transport", "(e) => e.dataset.transport")
    return text


async def test_eight_chat_pairs_in_one_browser_connect_over_websockets(
    server: ServerProcess, context: Any
) -> None:
    started = time.monotonic()
    rooms = [unique("room") for _ in range(PAIRS)]
    urls = [url for room in rooms for url in chat_urls(server.base_url, room, None)]  # 'auto'
    pages = await asyncio.gather(*(open_page(context, url) for url in urls))
    alices, bobs = pages[0::2], pages[1::2]
    await wait_states(pages, "connected")
    connected = time.monotonic() - started
    await asyncio.gather(
        *(chat_submit(alice, f"hello from {room}") for alice, room in zip(alices, rooms, strict=True))
    )
    await wait_chat_lines(bobs, "them", [f"hello from {room}" for room in rooms])
    chatted = time.monotonic() - started
    print(f"{PAIRS} pairs in one context: connected after {connected:.1f} s, chatted after {chatted:.1f} s")
    for page in pages:
        assert await transport_shown(page) == "websocket"
        assert await page.text_content("#transport") == "websocket"


@pytest.fixture
def slow_polls(real_server: Callable[..., ServerProcess]) -> ServerProcess:
    # Long polls that last a minute: the stall then outlasts the test's deadline for certain.
    return real_server("-public", str(PUBLIC), "-long-polling-timeout", "60")


async def test_eight_long_polling_pairs_in_one_browser_stall(slow_polls: ServerProcess, context: Any) -> None:
    """The same sixteen pages forced to long-poll: six polls take every connection and the rest wait."""
    rooms = [unique("room") for _ in range(PAIRS)]
    alices, bobs = zip(*(chat_urls(slow_polls.base_url, room, "long-polling") for room in rooms), strict=True)
    pages = [await context.new_page() for _ in range(2 * PAIRS)]
    # Navigations of stalled pages never finish: run them aside and cancel them at the end.
    loads: list[asyncio.Task[Any]] = []

    async def load(page: Any, url: str) -> None:
        with contextlib.suppress(Exception):
            await page.goto(url, wait_until="commit", timeout=60_000)

    for page, url in zip(pages[:PAIRS], alices, strict=True):  # every alice first: their polls fill the pool
        loads.append(asyncio.create_task(load(page, url)))
    await pages[0].wait_for_function("window.demo && demo.channel.transport === 'long-polling'", timeout=10e3)
    for page, url in zip(pages[PAIRS:], bobs, strict=True):
        loads.append(asyncio.create_task(load(page, url)))

    async def state(page: Any) -> str | None:
        try:
            async with asyncio.timeout(2):
                result: str | None = await page.evaluate(
                    "() => document.getElementById('state')?.dataset.state ?? null"
                )
                return result
        except Exception:
            return None  # still loading, or its navigation waits for a connection

    # Long enough for sixteen socket pages to connect (the test above), far less than the polls last.
    deadline = time.monotonic() + 10
    connected = 0
    while time.monotonic() < deadline and connected < 2 * PAIRS:
        states = await asyncio.gather(*(state(page) for page in pages))
        connected = states.count("connected")
        await asyncio.sleep(0.5)  # polling a condition with a deadline, not synchronising on time
    print(f"long polling: {connected} of {2 * PAIRS} pages connected within the deadline; states: {states}")
    assert connected < 2 * PAIRS, "sixteen long-polling pages in one browser did not stall"
    assert await transport_shown(pages[0]) == "long-polling"
    for task in loads:
        task.cancel()


@pytest.fixture
async def proxied(
    real_server: Callable[..., ServerProcess],
) -> AsyncIterator[tuple[str, UpgradeStrippingProxy]]:
    server = real_server("-public", str(PUBLIC), tls=False)  # the proxy speaks plain HTTP (127.0.0.1)
    port = int(server.base_url.rsplit(":", 1)[1])
    proxy = UpgradeStrippingProxy(port)
    await proxy.start()
    yield f"http://127.0.0.1:{proxy.port}", proxy
    await proxy.stop()


async def test_pages_fall_back_to_long_polling_behind_a_proxy_without_upgrades(
    proxied: tuple[str, UpgradeStrippingProxy], context: Any
) -> None:
    base_url, proxy = proxied
    alice_url, bob_url = chat_urls(base_url, unique("room"), None)  # 'auto'
    alice, bob = await asyncio.gather(open_page(context, alice_url), open_page(context, bob_url))
    await chat_say(alice, "through an old proxy")
    await wait_chat_line(bob, "them", "through an old proxy")
    for page in (alice, bob):
        assert await transport_shown(page) == "long-polling"
        assert await page.text_content("#transport") == "long-polling"
        assert await page.text_content("#error") == ""
    assert proxy.upgrades_refused >= 2  # each page did try the socket first


# ---- signal_channel.js on its own, with a spy on its WebSocket frames ----

# Replaces WebSocket with a subclass that records frames both ways (and close codes), and
# can swallow outgoing acks; then runs `body` with a deadline, so a broken client fails, not hangs.
SPY_AND_RUN = """async ([a, b, extra]) => {
  const spy = {received: [], sent: [], closes: [], sockets: [], dropAcks: false, note: () => null};
  window.WebSocket = class extends WebSocket {
    constructor(...args) {
      super(...args);
      spy.sockets.push(this);
      this.addEventListener('message', (e) => spy.received.push(JSON.parse(e.data)));
      this.addEventListener('close', (e) => spy.closes.push(e.code));
    }
    send(data) {
      const frame = JSON.parse(data);
      if (frame.type === 'ack' && spy.dropAcks) return;
      spy.sent.push({...frame, note: spy.note()});
      super.send(data);
    }
  };
  const until = async (condition, what) => {
    for (let i = 0; i < 1000 && !condition(); i++) await new Promise((r) => setTimeout(r, 10));
    if (!condition()) throw new Error('never happened: ' + what);
  };
  const ready = (channel) => until(() => channel.transport === 'websocket' && channel._session, 'ready');
  const deadline = new Promise((_, reject) => setTimeout(() => reject(new Error('deadline passed')), 15000));
  return Promise.race([deadline, (async () => { %s })()]);
}"""


async def run_script(new_page: Callable[..., Any], server: ServerProcess, body: str) -> Any:
    page = await new_page(f"{server.base_url}/")
    await page.add_script_tag(url="signal_channel.js")
    return await page.evaluate(SPY_AND_RUN % body, [unique("a"), unique("b"), None])


async def test_a_burst_is_acknowledged_once_after_its_listeners_ran(
    server: ServerProcess, new_page: Callable[..., Any]
) -> None:
    result = await run_script(
        new_page,
        server,
        """
        const owner = new SignalingChannel({from: b, password: 'pb', autoConnect: false});
        await owner.send({type: 'n', n: 0}, {to: b});  // a POST makes b's inbox (a note to itself)
        const sender = new SignalingChannel({from: a, to: b, password: 'pa', autoConnect: false});
        for (let n = 1; n < 10; n++) await sender.send({type: 'n', n});  // ten messages wait in b's inbox
        const reader = new SignalingChannel({from: b, password: 'pb', autoConnect: false});
        const seen = [];
        spy.note = () => seen.length;  // listeners run so far, noted on every frame the client sends
        reader.addEventListener('n', (e) => seen.push(e.detail.n));
        reader.connect();
        await until(() => seen.length === 10, 'ten messages');
        const ids = spy.received.filter((f) => f.type === 'message').map((f) => f.id);
        await until(() => spy.sent.some((f) => f.type === 'ack' && f.id === Math.max(...ids)), 'ack of all');
        reader.disconnect();
        return {seen, ids, acks: spy.sent.filter((f) => f.type === 'ack'), transport: reader.transport};
        """,
    )
    assert result["seen"] == list(range(10))
    assert result["transport"] == "websocket"
    ids, acks = result["ids"], result["acks"]
    assert len(ids) == 10 and ids == sorted(ids)
    assert 1 <= len(acks) <= 2, f"one ack per burst, not one per message: {acks}"
    assert acks[-1]["id"] == ids[-1]
    # An ack goes out only once the listeners of every message it covers have run.
    for ack in acks:
        assert ack["note"] >= ids.index(ack["id"]) + 1


async def test_repeats_after_a_reconnect_are_dropped(
    server: ServerProcess, new_page: Callable[..., Any]
) -> None:
    result = await run_script(
        new_page,
        server,
        """
        const reader = new SignalingChannel({from: b, password: 'pb', minBackoff: 50});
        const seen = [];
        const errors = [];
        reader.addEventListener('n', (e) => seen.push(e.detail.n));
        reader.addEventListener('error', (e) => errors.push(e.detail.status));
        await ready(reader);
        spy.dropAcks = true;  // the acks get lost: the server still holds the three as unacknowledged
        const sender = new SignalingChannel({from: a, to: b, password: 'pa', autoConnect: false});
        for (const n of [1, 2, 3]) await sender.send({type: 'n', n});
        await until(() => seen.length === 3, 'three messages');
        spy.dropAcks = false;
        const first = reader._session;
        spy.sockets[0].close(4000);  // the connection drops; the channel opens another
        await until(() => reader._session && reader._session !== first, 'a second socket');
        await until(() => spy.received.filter((f) => f.type === 'message').length === 6, 'the repeats');
        await sender.send({type: 'n', n: 4});
        await until(() => seen.length === 4, 'a fourth message');
        reader.disconnect();
        const ids = spy.received.filter((f) => f.type === 'message').map((f) => f.id);
        return {seen, ids, sockets: spy.sockets.length, errors, transport: reader.transport};
        """,
    )
    ids = result["ids"]
    assert result["seen"] == [1, 2, 3, 4]  # each once
    assert len(ids) == 7 and ids[3:6] == ids[:3]  # while the server did send the three again
    assert result["sockets"] == 2
    assert result["transport"] == "websocket"
    assert result["errors"] == [0]  # the lost connection was reported (status 0, as a network error)


async def test_send_over_the_socket_rejects_with_the_status_of_an_error_frame(
    server: ServerProcess, new_page: Callable[..., Any]
) -> None:
    result = await run_script(
        new_page,
        server,
        """
        let posts = 0;
        const fetchOriginal = window.fetch;
        window.fetch = (url, init) => {
          if (init && init.method === 'POST') posts++;
          return fetchOriginal(url, init);
        };
        const channel = new SignalingChannel({from: a, password: 'pa'});
        await ready(channel);
        const statuses = [];
        for (const [data, to] of [[{type: 'x'}, 'nobody-' + a], [{type: 'x', pad: 'y'.repeat(12000)}, a]]) {
          try {
            await channel.send(data, {to, retry: false});
            statuses.push('sent');
          } catch (e) {
            statuses.push([e.name, e.status]);
          }
        }
        // A 404 is retried over the socket until the peer's inbox exists.
        const late = channel.send({type: 'late'}, {to: b});
        const refused = (f) => f.type === 'error' && f.status === 404 && f.ref === 3;
        await until(() => spy.received.some(refused), '404');
        const peer = new SignalingChannel({from: b, password: 'pb'});
        const arrived = new Promise((resolve) => peer.addEventListener('late', (e) => resolve(e.from)));
        await late;
        const from = await arrived;
        channel.disconnect();
        peer.disconnect();
        const sends = spy.sent.filter((f) => f.type === 'send').length;
        return {statuses, from, posts, sends, a};
        """,
    )
    assert result["statuses"] == [["SignalingError", 404], ["SignalingError", 413]]
    assert result["from"] == result["a"]
    assert result["posts"] == 0  # everything went over the socket
    assert result["sends"] >= 4


AUTH_SECRET = "websocket-browser-test-secret"


@pytest.fixture(scope="module")
def token_server(
    loopback_only: bool, tls_files: tuple[str, str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    flags = ["-public", str(PUBLIC), "-auth-secret", AUTH_SECRET]
    server = start_server(flags, cwd=tmp_path_factory.mktemp("ws-token-server"), tls=tls_files)
    yield server
    server.stop()


async def test_a_refused_token_is_renewed_once_on_a_4401_close(
    token_server: ServerProcess, new_page: Callable[..., Any]
) -> None:
    page = await new_page(f"{token_server.base_url}/")
    await page.add_script_tag(url="signal_channel.js")
    a, b = unique("a"), unique("b")
    expired = tokens.issue(AUTH_SECRET, a, ttl=60, now=time.time() - 3600)
    extra = [expired, tokens.issue(AUTH_SECRET, a, 600), tokens.issue(AUTH_SECRET, b, 600)]
    result = await page.evaluate(
        SPY_AND_RUN
        % """
        const [expired, tokenA, tokenB] = extra;
        let calls = 0;
        const errors = [];
        const password = async () => (calls++ === 0 ? expired : tokenA);
        const alice = new SignalingChannel({from: a, password});
        alice.addEventListener('error', (e) => errors.push(e.detail.status));
        const ping = new Promise((resolve) => alice.addEventListener('ping', (e) => resolve(e.from)));
        await ready(alice);
        const bob = new SignalingChannel({from: b, to: a, password: tokenB, autoConnect: false});
        await bob.send({type: 'ping'});
        const from = await ping;
        const forged = new SignalingChannel({from: b + 'x', password: () => { calls++; return 'forged'; }});
        const refused = await new Promise((resolve) =>
          forged.addEventListener('error', (e) => resolve(e.detail.status)));
        alice.disconnect();
        return {from, calls, errors, closes: spy.closes, refused, forgedConnected: forged.connected};
        """,
        [a, b, extra],
    )
    assert result["from"] == b
    assert result["errors"] == []
    assert result["closes"][0] == 4401  # the expired token's socket
    # Two calls for alice (expired, then fresh), two for the forged one (first try, one renewal).
    assert result["calls"] == 4
    assert result["refused"] == 401 and result["forgedConnected"] is False


async def test_a_superseded_channel_reports_409_and_stops(
    server: ServerProcess, new_page: Callable[..., Any]
) -> None:
    result = await run_script(
        new_page,
        server,
        """
        const first = new SignalingChannel({from: a, password: 'pa'});
        await ready(first);
        const status = new Promise((resolve) =>
          first.addEventListener('error', (e) => resolve(e.detail.status)));
        const second = new SignalingChannel({from: a, password: 'pa'});  // e.g. the same page in a new tab
        await ready(second);
        const got = await status;
        const sender = new SignalingChannel({from: b, to: a, password: 'pb', autoConnect: false});
        const arrived = new Promise((resolve) => second.addEventListener('hi', () => resolve(true)));
        await sender.send({type: 'hi'});
        await arrived;
        const closes = [...spy.closes];
        second.disconnect();
        return {got, firstConnected: first.connected, closes};
        """,
    )
    assert result == {"got": 409, "firstConnected": False, "closes": [4409]}

"""Real peers: headless Debian Chromium (playwright) and aiortc, on loopback only.

The whole package runs in a fresh network namespace holding only `lo` (when we
may make one, i.e. as root): ICE then sees loopback candidates only, so no
WebRTC packet can go to any other address. Servers, Chromium and aiortc
sockets are all created inside it; the namespace is left when the package ends.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ..support import ROOT, ServerProcess, start_server
from ..turn_support import TurnServer, turn_or_skip

CHROMIUM = os.environ.get("INBOX_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    # Plain host candidates instead of mDNS names (resolving those needs multicast).
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
SCREENSHOTS = Path(os.environ.get("INBOX_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "screenshots"
PUBLIC = ROOT / "public"
EXAMPLE = ROOT / "examples" / "aiortc_peer.py"
CLONE_NEWNET = 0x40000000


def pytest_report_header() -> str:
    return f"browser screenshots: {SCREENSHOTS}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="package", autouse=True)
def loopback_only() -> Iterator[bool]:
    """Move this thread (and so every process and socket it makes) into a namespace with only `lo`."""
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            error = os.strerror(ctypes.get_errno())
            if os.environ.get("CI") == "true":
                pytest.fail(f"cannot make a loopback-only network namespace: {error}")
            warnings.warn(f"WebRTC tests run in the host network namespace: {error}", stacklevel=1)
            yield False
            return
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            yield True
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to the original network namespace")
    finally:
        os.close(original)


@pytest.fixture(scope="package")
def anyio_backend() -> str:
    """One event loop for the package, so one Chromium serves every test."""
    return "asyncio"


@pytest.fixture(scope="package")
async def browser(loopback_only: bool) -> AsyncIterator[Any]:
    """Debian's Chromium, started once. In CI a Chromium that cannot start fails the tests."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        try:
            chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        except Exception as error:
            message = f"Chromium ({CHROMIUM}) cannot start: {error}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        print(f"\nscreenshots go to {SCREENSHOTS}", file=sys.stderr)
        yield chromium
        await chromium.close()


@pytest.fixture(scope="package")
def shared_server(
    loopback_only: bool, tls_files: tuple[str, str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = start_server(["-public", str(PUBLIC)], cwd=tmp_path_factory.mktemp("server"), tls=tls_files)
    yield server
    server.stop()


@pytest.fixture
def server(shared_server: ServerProcess) -> ServerProcess:
    """inbox-asgi over HTTPS serving this checkout's public/ (the pages under test).

    One process serves the package: tests use fresh names (`pages.unique`), so they
    never meet. A test that stops or reconfigures a server takes its own `real_server`.
    """
    assert shared_server.process.poll() is None, "the shared server died:\n" + shared_server.log()
    return shared_server


@pytest.fixture
async def new_page(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await new_page(url)` opens `url` in a fresh context (own sessionStorage).

    Console output and page errors are printed, so a failing test shows them.
    """
    contexts = []

    async def open_page(url: str) -> Any:
        context = await browser.new_context(ignore_https_errors=True, viewport={"width": 900, "height": 800})
        contexts.append(context)
        page = await context.new_page()
        label = url.rsplit("/", 1)[-1]
        page.on("console", lambda message: print(f"[{label}] {message.type}: {message.text}"))
        page.on("pageerror", lambda error: print(f"[{label}] page error: {error}"))
        await page.goto(url)
        return page

    yield open_page
    for context in contexts:
        await context.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """`await screenshot(page, "name")` saves test-artifacts/screenshots/<test>-<name>.png."""

    async def take(page: Any, name: str) -> Path:
        path = SCREENSHOTS / f"{request.node.name}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    return take


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice leaves 127.0.0.1 out of its host candidates; here it is all there is."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture(scope="package")
def turn(loopback_only: bool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TurnServer]:
    """A throw-away coturn on loopback, in the package's namespace (skipped if it can't run; CI fails)."""
    server = turn_or_skip(tmp_path_factory.mktemp("turn"))
    yield server
    server.stop()


@pytest.fixture(scope="package")
def turn_signaling(
    turn: TurnServer, tls_files: tuple[str, str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """inbox-asgi handing out credentials for `turn` at /ice-servers (and serving the pages)."""
    flags = ["-public", str(PUBLIC), "-turn-urls", turn.url, "-turn-secret", turn.secret, "-turn-ttl", "600"]
    server = start_server(flags, cwd=tmp_path_factory.mktemp("turn-signaling"), tls=tls_files)
    yield server
    server.stop()


@pytest.fixture(scope="package")
def peer() -> ModuleType:
    """examples/aiortc_peer.py itself, so the tests prove what the README tells people to run."""
    spec = importlib.util.spec_from_file_location("aiortc_peer", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

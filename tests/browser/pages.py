"""What the tests ask of the demo pages, in one place (selectors and in-page checks)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

VIDEO = "document.querySelector('video#preview')"
PROGRESS = f"""() => {{
  const v = {VIDEO};
  return {{width: v.videoWidth, time: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames}};
}}"""
HAS_FRAMES = f"() => {{ const v = {VIDEO}; return v.videoWidth > 0 && v.currentTime > 0; }}"
ADVANCED = f"""([time, frames]) => {{
  const v = {VIDEO};
  return v.currentTime >= time + 1.5 && v.getVideoPlaybackQuality().totalVideoFrames > frames + 10;
}}"""


def unique(prefix: str) -> str:
    """A fresh name, so tests sharing a server never share an inbox."""
    return f"{prefix}-{secrets.token_hex(3)}"


async def assert_video_plays(page: Any, timeout_ms: float = 20_000) -> dict[str, float]:
    """Real frames in video#preview: a size, and time and frame count moving on over ~2 s."""
    await page.wait_for_function(HAS_FRAMES, timeout=timeout_ms)
    before = await page.evaluate(PROGRESS)
    await page.wait_for_function(ADVANCED, arg=[before["time"], before["frames"]], timeout=10_000)
    after = await page.evaluate(PROGRESS)
    assert after["width"] > 0
    assert after["time"] > before["time"] + 1
    assert after["frames"] > before["frames"]
    return after


async def wait_state(page: Any, state: str, timeout_ms: float = 20_000) -> None:
    await page.wait_for_function(
        "(state) => document.getElementById('state').dataset.state === state", arg=state, timeout=timeout_ms
    )


async def start_camera(page: Any) -> None:
    """On send.html: pick the first camera and press Start."""
    await page.wait_for_function("document.querySelectorAll('select#devices option').length > 0")
    await page.select_option("select#devices", index=0)
    await page.click("button#start")


async def chat_say(page: Any, text: str) -> None:
    await page.wait_for_selector("#message:enabled")
    await page.fill("#message", text)
    await page.click("#send")


async def wait_chat_line(page: Any, kind: str, text: str, timeout_ms: float = 20_000) -> None:
    """Wait for a line of `kind` ('me', 'them', 'info') reading `text` in the chat log."""
    await page.wait_for_function(
        """([kind, text]) => [...document.querySelectorAll('#log li.' + kind)]
             .some((li) => li.textContent === text)""",
        arg=[kind, text],
        timeout=timeout_ms,
    )


async def chat_lines(page: Any) -> list[str]:
    lines: list[str] = await page.eval_on_selector_all(
        "#log li", "(items) => items.map((li) => li.textContent)"
    )
    return lines


# Every selected candidate pair of the page's current call (demo.call), with its two
# candidates, and the page's local candidates: what getStats() says the connection uses.
SELECTED_PAIRS = """async () => {
  const pc = demo.call.peer && demo.call.peer.connection;
  if (!pc) return null;
  const stats = await pc.getStats();
  const candidate = (id) => {
    const c = stats.get(id);
    return {type: c.candidateType, address: c.address, port: c.port, url: c.url || null};
  };
  const pairs = [];
  const local = [];
  stats.forEach((report) => {
    if (report.type === 'transport' && report.selectedCandidatePairId) {
      const pair = stats.get(report.selectedCandidatePairId);
      pairs.push({local: candidate(pair.localCandidateId), remote: candidate(pair.remoteCandidateId),
                  bytesReceived: pair.bytesReceived});
    }
    if (report.type === 'local-candidate') local.push(report.candidateType);
  });
  return {pairs, local};
}"""


async def selected_pairs(page: Any) -> dict[str, Any]:
    """SELECTED_PAIRS for `page`: {"pairs": [{"local": {...}, "remote": {...}, ...}], "local": [types]}."""
    result: dict[str, Any] = await page.evaluate(SELECTED_PAIRS)
    return result


class Inbox:
    """Collects data-channel messages; `await inbox.wait_for(text)` instead of sleeping."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, channel: Any, text: str) -> None:
        self.messages.append(text)
        self.changed.set()

    async def wait_for(self, text: str, within: float = 20) -> None:
        async with asyncio.timeout(within):
            while text not in self.messages:
                self.changed.clear()
                await self.changed.wait()


# Many pages in one context: only one is in front, and requestAnimationFrame (playwright's
# default polling, and its click's stability check) is throttled in the others. These
# poll on a timer and submit the chat form directly.


async def wait_states(pages: list[Any], state: str, timeout_ms: float = 20_000) -> None:
    """Wait until every page's #state reads `state`, checking all pages at once."""
    await asyncio.gather(
        *(
            page.wait_for_function(
                "(state) => document.getElementById('state')?.dataset.state === state",
                arg=state,
                polling=100,
                timeout=timeout_ms,
            )
            for page in pages
        )
    )


async def chat_submit(page: Any, text: str, timeout_ms: float = 20_000) -> None:
    """chat_say for a page that may be in the background: type `text` and submit the form."""
    await page.wait_for_function(
        "() => !document.getElementById('message').disabled", polling=100, timeout=timeout_ms
    )
    await page.evaluate(
        """(text) => {
          document.getElementById('message').value = text;
          document.getElementById('chat').requestSubmit();
        }""",
        text,
    )


async def wait_chat_lines(pages: list[Any], kind: str, texts: list[str], timeout_ms: float = 20_000) -> None:
    """wait_chat_line for many pages at once: page i shows a line of `kind` reading texts[i]."""
    await asyncio.gather(
        *(
            page.wait_for_function(
                """([kind, text]) => [...document.querySelectorAll('#log li.' + kind)]
                     .some((li) => li.textContent === text)""",
                arg=[kind, text],
                polling=100,
                timeout=timeout_ms,
            )
            for page, text in zip(pages, texts, strict=True)
        )
    )

"""The public directory: demo pages, with traversal refused before Starlette sees it."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from inbox_asgi.http.responses import send_text

logger = logging.getLogger("inbox_asgi")

#: The demo pages shipped inside the wheel (see pyproject's force-include).
BUNDLED = Path(__file__).resolve().parents[1] / "public"
#: In a source checkout the pages sit at the repository root.
CHECKOUT = Path(__file__).resolve().parents[3] / "public"


def public_directory(configured: str, *, warn_if_missing: bool = True) -> Path:
    """The configured directory if it exists, else the pages bundled with the package.

    A -public that names no directory is most likely a typo, and the fallback
    would hide it behind working demo pages: say so, unless the caller knows it
    is the default (`./public` missing is the normal case for an installed package).
    """
    if Path(configured).is_dir():
        return Path(configured)
    for candidate in (BUNDLED, CHECKOUT):
        if candidate.is_dir():
            log = logger.warning if warn_if_missing else logger.info
            log(
                "public directory %r does not exist; serving the bundled pages from %s", configured, candidate
            )
            return candidate
    raise FileNotFoundError(f"no public directory: {configured!r} does not exist and no bundled pages")


class PublicFiles:
    """StaticFiles that answers 404 to any `..` segment instead of normalising it away."""

    def __init__(self, directory: Path) -> None:
        self.files = StaticFiles(directory=directory, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if ".." in path.replace("\\", "/").split("/") or "\x00" in path:
            await send_text(send, 404, "not found")
            return
        await self.files(scope, receive, send)

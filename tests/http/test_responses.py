"""The one table from domain errors to HTTP: every error has a deliberate answer, none a 500."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from typing import Any

import pytest

import inbox_asgi
from inbox_asgi.http.responses import ERROR_STATUS, send_error
from inbox_asgi.http.websocket import CLOSE_CODE
from inbox_asgi.mailbox.errors import BodyTooLarge, InboxError
from inbox_asgi.mailbox.interface import ShuttingDown, Superseded

pytestmark = pytest.mark.anyio


def all_subclasses(cls: type[InboxError]) -> set[type[InboxError]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


def every_module_imported() -> None:
    """Subclasses only exist once their module is imported; optional extras may be missing."""
    for module in pkgutil.walk_packages(inbox_asgi.__path__, "inbox_asgi."):
        if module.name.endswith("__main__"):
            continue  # runs the server
        with contextlib.suppress(ImportError):
            importlib.import_module(module.name)


every_module_imported()
#: Errors only a WebSocket session raises (malformed frames, no auth in time): they end
#: the socket with a close code from websocket.CLOSE_CODE and never reach an HTTP answer.
SOCKET_ONLY = {cls for cls in all_subclasses(InboxError) if cls.__module__ == "inbox_asgi.http.websocket"}
ERRORS = sorted(all_subclasses(InboxError) - SOCKET_ONLY, key=lambda cls: cls.__name__)


def test_the_walk_found_the_errors() -> None:
    assert len(ERRORS) >= 13


def test_every_socket_only_error_has_a_close_code() -> None:
    assert SOCKET_ONLY, "the walk found the WebSocket session's errors"
    assert set(CLOSE_CODE) >= SOCKET_ONLY
    assert set(CLOSE_CODE) - SOCKET_ONLY <= set(ERROR_STATUS) | {Superseded, ShuttingDown}


@pytest.mark.parametrize("error", ERRORS, ids=lambda cls: cls.__name__)
async def test_every_domain_error_has_a_status_that_is_not_500(error: type[InboxError]) -> None:
    assert error in ERROR_STATUS, f"{error.__name__} is missing from ERROR_STATUS: a client would get 500"
    sent: list[dict[str, Any]] = []

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    await send_error(send, error())
    status = sent[0]["status"]
    assert 400 <= status < 600 and status != 500
    assert sent[1]["body"].strip(), "a refusal carries its reason"
    headers = dict(sent[0]["headers"])
    if status in (429, 503):
        assert int(headers[b"retry-after"]) >= 1, "a refusal to retry later says when"


async def test_a_413_closes_the_connection() -> None:
    """SPEC 6: the client may still be streaming a body nobody will read; draining it costs CPU."""
    sent: list[dict[str, Any]] = []

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    await send_error(send, BodyTooLarge())
    assert (b"connection", b"close") in sent[0]["headers"]

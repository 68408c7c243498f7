"""The uvicorn and asyncio internals the fast paths lean on, checked once per process.

uvicorn's protocol classes are not a public API: a minor release may rename
what `cycle_io` and `protocol` read and write. Each fast path names what it
needs; `probe` looks for those names in the installed uvicorn (on throw-away
objects built like uvicorn builds them), and switches off, with one warning,
every path that lacks one. Requests then take plain ASGI: slower, never a 500.
pyproject pins uvicorn to the minor these names were checked against.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http import flow_control, httptools_impl

logger = logging.getLogger("inbox_asgi")

#: What cycle_io and the protocol read or set on a RequestResponseCycle.
CYCLE_ATTRIBUTES = (
    "scope",
    "transport",
    "flow",
    "access_log",
    "default_headers",
    "message_event",
    "on_response",
    "disconnected",
    "keep_alive",
    "waiting_for_100_continue",
    "response_started",
    "response_complete",
)
#: What cycle_io reads or calls on uvicorn's FlowControl.
FLOW_ATTRIBUTES = ("write_paused",)
#: The protocol hook a cycle calls when its response is complete (pipelined bytes wait for it).
RESPONSE_HOOK = "on_response_complete"
#: deque methods uvicorn may call on its pipeline that the lean list stand-in implements.
PIPELINE_METHODS = frozenset({"append", "appendleft", "pop", "popleft", "clear"})
DEQUE_ONLY = frozenset({"appendleft", "popleft", "extendleft", "rotate", "maxlen"})
#: What websocket_protocol.upgrade reads on the HTTP protocol, and on uvicorn's Config.
UPGRADE_ATTRIBUTES = frozenset(
    {"scope", "url", "transport", "app", "loop", "connections", "tasks", "server_state", "config"}
)
CONFIG_PARAMETERS = frozenset({"ws_max_size", "ws_ping_interval", "ws_ping_timeout"})


@dataclass(frozen=True, slots=True)
class FastPaths:
    """Which fast paths this process may take; `missing` names what switched one off."""

    #: WRITE_RESPONSE (cycle_io) offered to the endpoint.
    one_write: bool = True
    #: Bytes pipelined behind a request in flight are held until its response completes.
    hold_pipelined: bool = True
    #: Empty asyncio.Event waiter deques swapped for lists.
    lean_events: bool = True
    #: uvicorn's pipeline deque swapped for a list.
    lean_pipeline: bool = True
    #: WebSocket upgrades taken by websocket_protocol (uvicorn's own ws protocol otherwise).
    own_websocket: bool = True
    missing: tuple[str, ...] = ()


def probe() -> FastPaths:
    """Check every name the fast paths use; log one warning if any is missing."""
    missing: list[str] = []
    status_line = getattr(httptools_impl, "STATUS_LINE", None)
    if not (isinstance(status_line, dict) and isinstance(status_line.get(204), bytes)):
        missing.append("httptools_impl.STATUS_LINE")
    flow = _sample(flow_control, "FlowControl", _NoTransport())
    flow_ok = _has(flow, "FlowControl", FLOW_ATTRIBUTES, missing)
    cycle = _sample(httptools_impl, "RequestResponseCycle", **_cycle_arguments(flow))
    cycle_ok = _has(cycle, "RequestResponseCycle", CYCLE_ATTRIBUTES, missing)
    protocol = getattr(httptools_impl, "HttpToolsProtocol", None)
    hook_ok = callable(getattr(protocol, RESPONSE_HOOK, None))
    if not hook_ok:
        missing.append(f"HttpToolsProtocol.{RESPONSE_HOOK}")
    waiters = getattr(asyncio.Event(), "_waiters", None)
    if type(waiters) is not deque or waiters:
        missing.append("asyncio.Event._waiters")
    writable = getattr(flow, "_is_writable_event", None)
    if not isinstance(writable, asyncio.Event):
        missing.append("FlowControl._is_writable_event")
    names = _names_used(protocol)
    pipeline_ok = _pipeline_is_a_queue(names)
    if not pipeline_ok:
        missing.append("HttpToolsProtocol.pipeline")
    websocket_ok = _upgrade_reads_exist(names)
    if not websocket_ok:
        missing.append("HttpToolsProtocol attributes for the WebSocket upgrade")
    paths = FastPaths(
        one_write="httptools_impl.STATUS_LINE" not in missing and flow_ok and cycle_ok,
        hold_pipelined=cycle_ok and hook_ok,
        lean_events=cycle_ok and type(waiters) is deque and isinstance(writable, asyncio.Event),
        lean_pipeline=pipeline_ok,
        own_websocket=websocket_ok,
        missing=tuple(missing),
    )
    if missing:
        path_names = ("one_write", "hold_pipelined", "lean_events", "lean_pipeline", "own_websocket")
        off = [name for name in path_names if not getattr(paths, name)]
        logger.warning(
            "uvicorn %s lacks %s: running without %s (plain ASGI there instead)",
            uvicorn.__version__,
            ", ".join(missing),
            ", ".join(off) or "nothing",
        )
    return paths


class _NoTransport:
    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _cycle_arguments(flow: Any) -> dict[str, Any]:
    """RequestResponseCycle's arguments, as HttpToolsProtocol.on_headers_complete passes them."""
    return {
        "scope": {},
        "transport": _NoTransport(),
        "flow": flow,
        "logger": logger,
        "access_logger": logger,
        "access_log": False,
        "default_headers": [],
        "message_event": asyncio.Event(),
        "expect_100_continue": False,
        "keep_alive": True,
        "on_response": lambda: None,
    }


def _sample(module: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """One instance of module.name, or None if it is gone or no longer built that way."""
    cls = getattr(module, name, None)
    try:
        return cls(*args, **kwargs) if cls is not None else None
    except Exception:
        return None


def _has(instance: Any, what: str, names: tuple[str, ...], missing: list[str]) -> bool:
    if instance is None:
        missing.append(what)
        return False
    lacking = [f"{what}.{name}" for name in names if not hasattr(instance, name)]
    missing += lacking
    return not lacking


def _pipeline_is_a_queue(names: set[str]) -> bool:
    """Whether uvicorn still keeps `self.pipeline` and calls no deque method the list stand-in lacks."""
    return "pipeline" in names and not (names & DEQUE_ONLY) - PIPELINE_METHODS


def _upgrade_reads_exist(names: set[str]) -> bool:
    """Whether HttpToolsProtocol still sets what `upgrade` reads, and Config takes the ws_* settings."""
    try:
        parameters = set(inspect.signature(uvicorn.Config).parameters)
    except (TypeError, ValueError):
        return False
    return names >= UPGRADE_ATTRIBUTES and parameters >= CONFIG_PARAMETERS


def _names_used(protocol: Any) -> set[str]:
    """The attribute names uvicorn's protocol methods use, read from their code objects
    (building a protocol instance needs a whole uvicorn Config); none if it is gone."""
    names: set[str] = set()
    for attribute in vars(protocol).values() if protocol is not None else ():
        code = getattr(attribute, "__code__", None)
        if code is not None:
            names.update(code.co_names)
    return names

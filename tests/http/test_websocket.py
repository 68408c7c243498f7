"""/inbox/ws in-process (Starlette's TestClient): frames, close codes, interop with /inbox.

The socket and the HTTP requests of one test share the TestClient's event loop,
so the mailbox sees them in the order the test makes them. Every test runs on
both backends (the `backend` fixture: memory, and the session's private Redis);
those that bring their own in-memory mailbox run once.
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from inbox_asgi.app import create_app
from inbox_asgi.config import Settings
from inbox_asgi.http.websocket import CLOSE_CODE, ENVELOPE
from inbox_asgi.mailbox.interface import Mailbox, MailboxStats
from inbox_asgi.mailbox.memory import MemoryMailbox
from inbox_asgi.tokens import issue

from ..support import basic

PUBLIC = Path(__file__).resolve().parents[2] / "public"
#: TestClient's receive has no timeout: a frame that never comes fails the test here.
pytestmark = pytest.mark.timeout(30)
#: The settings of the backend the current test runs on (see `_on_backend`).
BACKEND: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _on_backend(backend: dict[str, Any]) -> Iterator[None]:
    BACKEND.clear()
    BACKEND.update(backend)
    yield
    BACKEND.clear()


@contextmanager
def serve(mailbox: Mailbox | None = None, **settings: Any) -> Iterator[TestClient]:
    # A test that brings its own mailbox runs on it whatever the backend parameter says.
    backend = {} if mailbox is not None else BACKEND
    values = {"public": str(PUBLIC), "long_polling": False, **backend, **settings}
    with TestClient(create_app(Settings(**values), mailbox=mailbox)) as client:
        yield client


def connect(
    client: TestClient, user: str = "r", password: str = "secret", **headers: str
) -> WebSocketTestSession:
    return client.websocket_connect("/inbox/ws", headers={**basic(user, password), **headers})


def ready(ws: WebSocketTestSession) -> int:
    frame = ws.receive_json()
    assert frame["type"] == "ready", frame
    generation = frame["inbox"]
    assert isinstance(generation, int)
    return generation


def closed_with(ws: WebSocketTestSession) -> int:
    with pytest.raises(WebSocketDisconnect) as info:
        while True:
            ws.receive_json()
    return info.value.code


def post(client: TestClient, to: str, body: bytes, user: str = "s", **headers: str) -> int:
    response = client.post(f"/inbox?to={to}", content=body, headers={**basic(user), **headers})
    status: int = response.status_code
    return status


def get(client: TestClient, user: str = "r") -> tuple[int, bytes]:
    response = client.get("/inbox", headers=basic(user))
    return response.status_code, response.content


def stats(client: TestClient) -> MailboxStats:
    mailbox = client.app.state.mailbox  # type: ignore[attr-defined]
    result: MailboxStats = client.portal.call(mailbox.stats)  # type: ignore[union-attr]
    return result


# -- auth ---------------------------------------------------------------------------


def test_auth_by_header_then_ready_with_the_inbox_generation() -> None:
    with serve() as client, connect(client) as ws:
        assert ready(ws) != 0


def test_auth_by_first_frame_opens_the_same_inbox() -> None:
    with serve() as client:
        with connect(client) as ws:
            generation = ready(ws)
        with client.websocket_connect("/inbox/ws") as ws:
            ws.send_json({"type": "auth", "username": "r", "password": "secret"})
            assert ready(ws) == generation


@pytest.mark.parametrize("by_frame", [False, True])
def test_wrong_password_is_4401(by_frame: bool) -> None:
    with serve() as client:
        assert post(client, "nobody", b"", user="r") == 404  # claims r with "secret"
        if by_frame:
            with client.websocket_connect("/inbox/ws") as ws:
                ws.send_json({"type": "auth", "username": "r", "password": "wrong"})
                assert closed_with(ws) == 4401
        else:
            with connect(client, password="wrong") as ws:
                assert closed_with(ws) == 4401


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "auth", "username": "a:b", "password": "x"},
        {"type": "auth", "username": "", "password": "x"},
        {"type": "auth", "username": "bell\x07", "password": "x"},
    ],
)
def test_auth_frames_follow_the_basic_rules(frame: dict[str, str]) -> None:
    with serve() as client, client.websocket_connect("/inbox/ws") as ws:
        ws.send_json(frame)
        assert closed_with(ws) == 4401


@pytest.mark.parametrize("first", ['{"type": "ack", "id": 1}', "not json", '["auth"]'])
def test_a_first_frame_that_is_not_auth_is_4400(first: str) -> None:
    with serve() as client, client.websocket_connect("/inbox/ws") as ws:
        ws.send_text(first)
        assert closed_with(ws) == 4400


def test_no_auth_in_time_is_4408() -> None:
    with serve(header_timeout=0.1) as client, client.websocket_connect("/inbox/ws") as ws:
        assert closed_with(ws) == 4408


def test_access_tokens_open_the_inbox_and_bad_ones_are_4401() -> None:
    secret = "socket-secret-0123456789"
    with serve(auth_secret=secret) as client:
        with connect(client, "r", issue(secret, "r", ttl=60)) as ws:
            generation = ready(ws)
        with connect(client, "r", issue(secret, "r", ttl=60)) as ws:  # a renewed token
            assert ready(ws) == generation
        for token in (
            issue(secret, "other", ttl=60),
            issue(secret, "r", ttl=10, now=time.time() - 60),
            "1:forged",
        ):
            with connect(client, "r", token) as ws:
                assert closed_with(ws) == 4401


def test_too_many_inboxes_is_4503() -> None:
    with serve(max_inboxes=1) as client:
        assert post(client, "nobody", b"", user="a") == 404
        with connect(client, "b") as ws:
            assert closed_with(ws) == 4503


def test_ready_generation_changes_when_the_inbox_is_created_anew() -> None:
    now = [1000.0]
    mailbox = MemoryMailbox(inbox_timeout=60, inbox_capacity=10, max_inboxes=100, clock=lambda: now[0])
    with serve(mailbox) as client:
        with connect(client) as ws:
            first = ready(ws)
        with connect(client) as ws:
            assert ready(ws) == first
        now[0] += 61
        client.portal.call(mailbox.expire_all)  # type: ignore[union-attr]
        with connect(client, password="new owner") as ws:
            assert ready(ws) != first


# -- delivery -----------------------------------------------------------------------


def test_messages_arrive_in_order_with_increasing_ids_and_their_sender() -> None:
    with serve() as client, connect(client) as ws:
        ready(ws)
        assert post(client, "r", "héllo".encode(), **{"Content-Type": "text/plain"}) == 200
        assert post(client, "r", b"") == 200
        assert post(client, "r", b"\xff\x00binary") == 200
        frames = [ws.receive_json() for _ in range(3)]
    assert [f["type"] for f in frames] == ["message"] * 3
    assert frames[0]["id"] < frames[1]["id"] < frames[2]["id"]
    assert frames[0] | {"id": 0} == {
        "type": "message",
        "id": 0,
        "from": "s",
        "content_type": "text/plain",
        "body": "héllo",
    }
    assert frames[1]["body"] == "" and frames[1]["content_type"] is None
    assert "body" not in frames[2]
    assert base64.b64decode(frames[2]["body_base64"]) == b"\xff\x00binary"


def test_an_ack_up_to_n_keeps_only_later_messages_for_the_next_socket() -> None:
    with serve() as client:
        get(client)  # claims r
        for body in (b"1", b"2", b"3"):
            post(client, "r", body)
        with connect(client) as ws:
            ready(ws)
            frames = [ws.receive_json() for _ in range(3)]
            ws.send_json({"type": "ack", "id": frames[1]["id"]})
            ws.send_json({"type": "send", "ref": 1, "to": "s", "body": "sync"})
            assert ws.receive_json() == {"type": "sent", "ref": 1}  # the ack was read before
        with connect(client) as ws:
            ready(ws)
            again = ws.receive_json()
    assert (again["id"], again["body"]) == (frames[2]["id"], "3")


def test_unacknowledged_messages_go_back_to_the_front_in_order_when_the_socket_drops() -> None:
    with serve() as client:
        with connect(client) as ws:
            ready(ws)
            for body in (b"a", b"b", b"c"):
                post(client, "r", body)
            [ws.receive_json() for _ in range(3)]
        post(client, "r", b"d")
        assert [get(client) for _ in range(5)] == [
            (200, b"a"),
            (200, b"b"),
            (200, b"c"),
            (200, b"d"),
            (204, b""),
        ]


def test_an_ack_for_a_message_not_sent_is_4400() -> None:
    with serve() as client, connect(client) as ws:
        ready(ws)
        ws.send_json({"type": "ack", "id": 1})
        assert closed_with(ws) == 4400


@pytest.mark.parametrize("frame", ['{"type": "dance"}', "[]", '{"type": "send", "to": "s", "body": 5}'])
def test_malformed_frames_are_4400(frame: str) -> None:
    with serve() as client, connect(client) as ws:
        ready(ws)
        ws.send_text(frame)
        assert closed_with(ws) == 4400


def test_binary_frames_are_4400() -> None:
    with serve() as client, connect(client) as ws:
        ready(ws)
        ws.send_bytes(b'{"type": "ack", "id": 0}')
        assert closed_with(ws) == 4400


# -- one reader -----------------------------------------------------------------------


def test_a_newer_get_supersedes_the_socket_with_4409_and_reads_its_unacknowledged_message() -> None:
    with serve() as client, connect(client) as ws:
        ready(ws)
        post(client, "r", b"first")
        assert ws.receive_json()["body"] == "first"
        assert get(client) == (200, b"first")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert (closed.value.code, closed.value.reason) == (4409, "a newer reader of this inbox took over")


def test_a_newer_socket_supersedes_the_older_with_4409() -> None:
    with serve() as client, connect(client) as old:
        generation = ready(old)
        post(client, "r", b"unacknowledged")
        assert old.receive_json()["body"] == "unacknowledged"
        with connect(client) as new:
            assert ready(new) == generation
            assert closed_with(old) == 4409
            assert new.receive_json()["body"] == "unacknowledged"


# -- sending --------------------------------------------------------------------------


def test_a_message_sent_on_a_socket_is_read_by_get_and_the_other_way() -> None:
    with serve() as client:
        assert get(client, "peer") == (204, b"")
        with connect(client) as ws:
            ready(ws)
            ws.send_json(
                {"type": "send", "ref": "x", "to": "peer", "body": "offer", "content_type": "application/sdp"}
            )
            assert ws.receive_json() == {"type": "sent", "ref": "x"}
            ws.send_json(
                {"type": "send", "ref": "y", "to": "peer", "body_base64": base64.b64encode(b"\xfe").decode()}
            )
            assert ws.receive_json() == {"type": "sent", "ref": "y"}
            response = client.get("/inbox", headers=basic("peer"))
            assert (response.content, response.headers["x-from"]) == (b"offer", "r")
            assert response.headers["content-type"] == "application/sdp"
            assert get(client, "peer") == (200, b"\xfe")
            assert post(client, "r", b"answer", user="peer") == 200
            assert ws.receive_json()["body"] == "answer"


def test_send_errors_carry_the_post_statuses_and_keep_the_socket_open() -> None:
    with serve(max_body_size=10, inbox_capacity=1) as client, connect(client) as ws:
        ready(ws)
        get(client, "full")
        post(client, "full", b"fills it")

        def send(**frame: Any) -> dict[str, Any]:
            ws.send_json({"type": "send", "ref": 7, **frame})
            answer: dict[str, Any] = ws.receive_json()
            return answer

        assert send(to="nobody", body="x")["status"] == 404
        assert send(body="x")["status"] == 400
        assert send(to="full", body="x", content_type="text/plain\r\nX: y")["status"] == 400
        too_large = send(to="full", body="x" * 11)
        assert (too_large["status"], too_large["ref"], too_large["retry_after"]) == (413, 7, None)
        assert send(to="full", body="12345", content_type="text/x")["status"] == 413  # its type counts
        full = send(to="full", body="x")
        assert (full["status"], full["retry_after"]) == (503, 1)
        assert send(to="r", body="to myself") == {"type": "sent", "ref": 7}
        assert ws.receive_json()["body"] == "to myself"


def test_a_frame_larger_than_any_message_needs_is_1009() -> None:
    with serve(max_body_size=30) as client, connect(client) as ws:
        ready(ws)
        ws.send_json(
            {"type": "send", "ref": 1, "to": "r", "body_base64": base64.b64encode(b"x" * 30).decode()}
        )
        assert ws.receive_json()["type"] == "sent"  # a maximal message fits
        ws.send_json({"type": "send", "ref": 2, "to": "r", "body": "x" * (40 + ENVELOPE)})
        assert closed_with(ws) == 1009


def test_the_rate_limit_closes_with_4429() -> None:
    with serve(rate_limit=0.001, rate_burst=4) as client:
        assert get(client, "peer") == (204, b"")  # one request
        with connect(client) as ws:
            ready(ws)  # the upgrade cost one
            for ref in (1, 2):
                ws.send_json({"type": "send", "ref": ref, "to": "peer", "body": ""})
                assert ws.receive_json()["type"] == "sent"
            ws.send_json({"type": "send", "ref": 3, "to": "peer", "body": ""})
            assert closed_with(ws) == 4429


# -- origins, backends, shutdown -------------------------------------------------------------


@pytest.mark.parametrize(
    ("cors", "origin", "allowed"),
    [
        ("https://good.example", "https://good.example", True),
        ("https://good.example", "https://evil.example", False),
        ("true", "https://any.example", True),
        ("false", "http://testserver", True),
        ("false", "https://evil.example", False),
    ],
)
def test_browser_origins_follow_cors(cors: str, origin: str, allowed: bool) -> None:
    settings = Settings.from_strings({"cors": cors, "public": str(PUBLIC)})
    with TestClient(create_app(settings)) as client:
        if allowed:
            with connect(client, Origin=origin) as ws:
                ready(ws)
        else:
            with pytest.raises(WebSocketDisconnect), connect(client, Origin=origin):
                pass


class NoSockets:
    """A backend without `attach`, as the Redis one is so far."""

    def __init__(self) -> None:
        self.inner = MemoryMailbox(inbox_timeout=60, inbox_capacity=10, max_inboxes=10)

    def __getattr__(self, name: str) -> Any:
        if name == "attach":
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_a_backend_without_sockets_refuses_with_1011_and_says_why() -> None:
    with (
        serve(NoSockets()) as client,
        connect(client) as ws,
        pytest.raises(WebSocketDisconnect) as info,
    ):
        ws.receive_json()
    assert info.value.code == 1011 and "memory" in info.value.reason


def test_shutdown_closes_with_1001_after_putting_unacknowledged_messages_back() -> None:
    with serve() as client, connect(client) as ws:
        ready(ws)
        post(client, "r", b"in flight")
        assert ws.receive_json()["body"] == "in flight"
        mailbox: MemoryMailbox = client.app.state.mailbox  # type: ignore[attr-defined]
        assert client.portal is not None
        client.portal.call(mailbox.shutdown)
        assert closed_with(ws) == 1001
        if BACKEND:  # Redis mode counts no queued messages: a read (which no longer waits) finds it
            assert get(client) == (200, b"in flight")
        else:
            assert stats(client).queued_messages == 1


def test_the_close_code_table_covers_section_9() -> None:
    assert {4400, 4401, 4408, 4409, 4429, 4503, 1009, 1001} <= set(CLOSE_CODE.values())


# -- chaos ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_sockets_dropped_at_random_lose_and_repeat_nothing_after_dedup(seed: int) -> None:
    """Posts interleaved with sockets that read a few frames, ack some, and drop."""
    rng = random.Random(seed)
    total = 60
    with serve(inbox_capacity=total) as client:
        get(client)  # claim r
        posted = 0
        seen: list[int] = []
        bodies: list[str] = []
        generation = None
        while len(seen) < total:
            for _ in range(rng.randrange(0, 8)):
                if posted < total:
                    assert post(client, "r", b"%d" % posted) == 200
                    posted += 1
            with connect(client) as ws:
                current = ready(ws)
                assert generation in (None, current)
                generation = current
                pending = posted - len(seen)  # at least this many will come, in a window of 32
                for _ in range(rng.randrange(0, min(pending, 32) + 1)):
                    frame = ws.receive_json()
                    if frame["id"] not in seen:  # the client's dedup
                        seen.append(frame["id"])
                        bodies.append(frame["body"])
                    if rng.random() < 0.5:
                        ws.send_json({"type": "ack", "id": frame["id"]})
        assert bodies == [str(i) for i in range(total)]
        assert seen == sorted(seen)
        # What is left in the inbox was delivered but never acknowledged: repeats only.
        while (left := get(client)) != (204, b""):
            assert left[1].decode() in bodies

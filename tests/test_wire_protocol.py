"""SPEC section 2, rule by rule, in-process through httpx's ASGITransport (every backend)."""

from __future__ import annotations

import base64

import anyio
import anyio.abc
import httpx
import pytest

from .conftest import ClientFactory
from .support import basic

pytestmark = pytest.mark.anyio

NO_WAIT = {"long_polling": False}


async def waiting_readers(client: httpx.AsyncClient) -> int:
    return (await client.app.state.mailbox.stats()).waiting_readers  # type: ignore[attr-defined, no-any-return]


async def until_waiting(client: httpx.AsyncClient, count: int = 1, timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while await waiting_readers(client) != count:
            await anyio.sleep(0.005)


async def post(
    client: httpx.AsyncClient, sender: str, to: str, body: bytes = b"", content_type: str | None = None
) -> httpx.Response:
    headers = basic(sender) | ({"Content-Type": content_type} if content_type else {})
    return await client.post("/inbox", params={"to": to}, headers=headers, content=body)


async def get(client: httpx.AsyncClient, user: str, password: str = "secret") -> httpx.Response:
    return await client.get("/inbox", headers=basic(user, password))


# -- GET ---------------------------------------------------------------------


async def test_get_creates_inbox_and_answers_204_without_message(make_client: ClientFactory) -> None:
    async with make_client(**NO_WAIT) as client:
        assert (await post(client, "s", "r")).status_code == 404
        response = await get(client, "r")
        assert response.status_code == 204
        assert "x-from" not in response.headers
        assert (await post(client, "s", "r", b"now")).status_code == 200


async def test_message_delivered_exactly_once_with_sender_and_content_type(
    make_client: ClientFactory,
) -> None:
    async with make_client(**NO_WAIT) as client:
        await get(client, "r")
        body = bytes(range(256))
        sent = await post(client, "zoë", "r", body, content_type="application/sdp")
        assert (sent.status_code, sent.content) == (200, b"")
        response = await get(client, "r")
        assert response.status_code == 200
        assert response.content == body
        assert response.headers.raw and (b"x-from", "zoë".encode()) in [
            (k.lower(), v) for k, v in response.headers.raw
        ]
        assert response.headers["content-type"] == "application/sdp"
        assert (await get(client, "r")).status_code == 204


async def test_no_content_type_when_sender_gave_none(make_client: ClientFactory) -> None:
    async with make_client(**NO_WAIT) as client:
        await get(client, "r")
        request = client.build_request("POST", "/inbox?to=r", headers=basic("s"), content=b"x")
        assert "content-type" not in request.headers
        assert (await client.send(request)).status_code == 200
        assert "content-type" not in (await get(client, "r")).headers


async def test_fifo_and_empty_bodies(make_client: ClientFactory) -> None:
    async with make_client(**NO_WAIT) as client:
        await get(client, "r")
        for body in (b"one", b"", b"three"):
            assert (await post(client, "s", "r", body)).status_code == 200
        received = [(await get(client, "r")) for _ in range(4)]
        assert [r.status_code for r in received] == [200, 200, 200, 204]
        assert [r.content for r in received[:3]] == [b"one", b"", b"three"]


async def test_long_poll_wakes_on_message(make_client: ClientFactory) -> None:
    async with make_client(long_polling_timeout=10) as client:
        await get_inbox_created(client, "r")
        async with anyio.create_task_group() as tasks:
            result = read_in_background(tasks, client, "r")
            await until_waiting(client)
            with anyio.fail_after(2):
                assert (await post(client, "s", "r", b"wake")).status_code == 200
        assert (result[0].status_code, result[0].content, result[0].headers["x-from"]) == (200, b"wake", "s")


def read_in_background(
    tasks: anyio.abc.TaskGroup, client: httpx.AsyncClient, user: str
) -> list[httpx.Response]:
    """Start a GET; its response lands in the returned list."""
    result: list[httpx.Response] = []

    async def read() -> None:
        result.append(await get(client, user))

    tasks.start_soon(read)
    return result


async def get_inbox_created(client: httpx.AsyncClient, user: str) -> None:
    """Create an inbox without waiting: a POST from its owner creates it too."""
    assert (await post(client, user, "nobody-here")).status_code == 404


async def test_long_poll_timeout_answers_204(make_client: ClientFactory) -> None:
    async with make_client(long_polling_timeout=0.2) as client:
        with anyio.fail_after(3):
            response = await get(client, "r")
        assert response.status_code == 204


async def test_newest_reader_wins(make_client: ClientFactory) -> None:
    async with make_client(long_polling_timeout=10) as client:
        results: dict[str, httpx.Response] = {}

        async def read(label: str) -> None:
            results[label] = await get(client, "r")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read, "old")
            await until_waiting(client)
            with anyio.fail_after(2):
                tasks.start_soon(read, "new")
                while "old" not in results:
                    await anyio.sleep(0.005)
            assert results["old"].status_code == 204
            await until_waiting(client)
            await post(client, "s", "r", b"for the new one")
        assert (results["new"].status_code, results["new"].content) == (200, b"for the new one")


async def test_vanished_reader_consumes_nothing(make_client: ClientFactory) -> None:
    async with make_client(long_polling_timeout=10) as client:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(get, client, "r")
            await until_waiting(client)
            tasks.cancel_scope.cancel()  # the client goes away mid long poll
        await until_waiting(client, 0)
        assert (await post(client, "s", "r", b"kept")).status_code == 200
        with anyio.fail_after(2):
            response = await get(client, "r")
        assert (response.status_code, response.content) == (200, b"kept")


# -- authentication ------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer token",
        "Basic %%%",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Basic " + base64.b64encode(b":pw").decode(),
        "Basic " + base64.b64encode(b"\xff:pw").decode(),
        "Basic " + base64.b64encode(b"a\x01b:pw").decode(),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_bad_credentials_get_401_with_challenge(
    make_client: ClientFactory, authorization: str | None, method: str
) -> None:
    async with make_client(**NO_WAIT) as client:
        headers = {"Authorization": authorization} if authorization else {}
        response = await client.request(method, "/inbox?to=x", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text.strip()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_two_authorization_headers_are_400_before_anything(
    make_client: ClientFactory, method: str
) -> None:
    """Each layer could read a different one (the access log the first, the endpoint the last)."""
    async with make_client(**NO_WAIT) as client:
        await get(client, "r")
        headers = [
            ("Authorization", basic("a")["Authorization"]),
            ("Authorization", basic("b")["Authorization"]),
        ]
        response = await client.request(method, "/inbox?to=r", headers=headers, content=b"forged")
        assert response.status_code == 400
        assert response.text == "two Authorization headers\n"
        for name in ("a", "b"):
            assert (await post(client, "s", name)).status_code == 404  # neither inbox was created
        assert (await get(client, "r")).status_code == 204  # nothing was delivered
        same_twice = [("Authorization", basic("r")["Authorization"])] * 2
        assert (await client.request(method, "/inbox?to=r", headers=same_twice)).status_code == 400


async def test_only_the_first_password_opens_an_inbox(make_client: ClientFactory) -> None:
    async with make_client(**NO_WAIT) as client:
        assert (await get(client, "r", "first")).status_code == 204
        assert (await get(client, "r", "second")).status_code == 401
        sender = await client.post("/inbox?to=x", headers=basic("r", "second"))
        assert sender.status_code == 401
        assert (await get(client, "r", "first")).status_code == 204


@pytest.mark.parametrize("password", ["", "with:colons:", "ünïcode"])
async def test_passwords_may_be_empty_or_contain_colons(make_client: ClientFactory, password: str) -> None:
    async with make_client(**NO_WAIT) as client:
        assert (await get(client, "r", password)).status_code == 204
        assert (await get(client, "r", password + "x")).status_code == 401


# -- POST ----------------------------------------------------------------------


async def test_post_checks_in_order(make_client: ClientFactory) -> None:
    async with make_client(max_body_size=4, inbox_capacity=1, **NO_WAIT) as client:
        # 1. malformed query beats bad credentials
        assert (await client.post("/inbox?to=%zz")).status_code == 400
        # 2. credentials beat a missing recipient
        assert (await client.post("/inbox")).status_code == 401
        # 3. missing or empty `to` — but the sender's inbox now exists
        assert (await client.post("/inbox", headers=basic("s"))).status_code == 400
        assert (await client.post("/inbox?to=", headers=basic("s2"))).status_code == 400
        assert (await client.post("/inbox?to=s", headers=basic("s2"), content=b"hi")).status_code == 200
        # 4. body size beats a missing recipient
        assert (await post(client, "s", "nobody", b"12345")).status_code == 413
        # 5. recipient missing
        assert (await post(client, "s", "nobody", b"1234")).status_code == 404
        # 6. capacity (s holds one message already)
        full = await post(client, "s2", "s", b"more")
        assert full.status_code == 503
        assert int(full.headers["retry-after"]) >= 1
        received = await get(client, "s")
        assert received.content == b"hi"  # the refused message was not stored
        assert (await get(client, "s")).status_code == 204


async def test_sender_becomes_reachable_by_sending(make_client: ClientFactory) -> None:
    async with make_client(**NO_WAIT) as client:
        await get(client, "r")
        await post(client, "s", "r", b"offer")
        assert (await post(client, "r", "s", b"answer")).status_code == 200
        assert (await get(client, "s")).content == b"answer"


async def test_chunked_body_over_limit_is_413(make_client: ClientFactory) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 100

    async with make_client(max_body_size=500, **NO_WAIT) as client:
        await get(client, "r")
        response = await client.post("/inbox?to=r", headers=basic("s"), content=chunks())
        assert response.status_code == 413
        assert (await get(client, "r")).status_code == 204


async def test_body_exactly_at_limit_is_accepted(make_client: ClientFactory) -> None:
    async with make_client(max_body_size=10, **NO_WAIT) as client:
        await get(client, "r")
        assert (await post(client, "s", "r", b"x" * 10)).status_code == 200


async def test_the_stored_content_type_counts_against_max_body_size(make_client: ClientFactory) -> None:
    """SPEC 6: a message is bounded with its Content-Type, which is stored with it."""

    async def streamed(size: int):  # type: ignore[no-untyped-def]
        yield b"x" * size

    async with make_client(max_body_size=20, **NO_WAIT) as client:
        await get(client, "r")
        ten = "text/x-abc"
        assert (await post(client, "s", "r", b"1" * 10, content_type=ten)).status_code == 200
        too_large = await post(client, "s", "r", b"x" * 11, content_type=ten)
        assert too_large.status_code == 413
        assert too_large.headers["connection"] == "close"  # not drained: see test_limits
        assert (await post(client, "s", "r", b"", content_type="t/" + "x" * 19)).status_code == 413
        chunked = client.build_request(
            "POST", "/inbox?to=r", headers=basic("s") | {"Content-Type": ten}, content=streamed(11)
        )
        assert "content-length" not in chunked.headers
        assert (await client.send(chunked)).status_code == 413
        chunked = client.build_request(
            "POST", "/inbox?to=r", headers=basic("s") | {"Content-Type": ten}, content=streamed(10)
        )
        assert (await client.send(chunked)).status_code == 200
        assert [(await get(client, "r")).content for _ in range(3)] == [b"1" * 10, b"x" * 10, b""]


# -- other methods and queries ---------------------------------------------------


async def test_options_is_204(make_client: ClientFactory) -> None:
    async with make_client() as client:
        assert (await client.options("/inbox")).status_code == 204


@pytest.mark.parametrize("method", ["HEAD", "PUT", "DELETE", "PATCH", "TRACE", "BREW"])
async def test_other_methods_are_405_before_authentication(make_client: ClientFactory, method: str) -> None:
    async with make_client() as client:
        response = await client.request(method, "/inbox")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, POST, OPTIONS"


async def test_head_never_dequeues(make_client: ClientFactory) -> None:
    async with make_client(**NO_WAIT) as client:
        await get(client, "r")
        await post(client, "s", "r", b"precious")
        assert (await client.head("/inbox", headers=basic("r"))).status_code == 405
        assert (await get(client, "r")).content == b"precious"


@pytest.mark.parametrize("query", ["x=%", "x=%g0", "to=%C3%28", "a=%ff"])
async def test_malformed_query_on_get_is_400_before_anything(make_client: ClientFactory, query: str) -> None:
    async with make_client(**NO_WAIT) as client:
        response = await client.get(f"/inbox?{query}", headers=basic("r"))
        assert response.status_code == 400
        assert "query" in response.text
        assert (await post(client, "s", "r")).status_code == 404  # no inbox was created


# -- lifetime ----------------------------------------------------------------------


async def test_inbox_expires_with_its_messages_and_the_name_is_free(make_client: ClientFactory) -> None:
    async with make_client(inbox_timeout=0.3, cleanup_interval=0.05, **NO_WAIT) as client:
        await get(client, "r", "old")
        await post(client, "s", "r", b"doomed")
        with anyio.fail_after(5):
            while (await post(client, "s", "r", b"probe")).status_code != 404:
                await anyio.sleep(0.05)
        assert (await get(client, "r", "new")).status_code == 204  # new password claims it


async def test_no_expiry_while_a_reader_waits(make_client: ClientFactory) -> None:
    async with make_client(inbox_timeout=0.2, cleanup_interval=0.05, long_polling_timeout=10) as client:
        async with anyio.create_task_group() as tasks:
            result = read_in_background(tasks, client, "r")
            await until_waiting(client)
            # A witness, idle from after r's read began: once an expiry pass has taken it,
            # r's inbox is past its timeout too, and that pass did not take it.
            await get_inbox_created(client, "witness")
            with anyio.fail_after(5):
                while await inboxes(client) != 1:
                    await anyio.sleep(0.01)
            assert (await post(client, "s", "r", b"still here")).status_code == 200
        assert result[0].content == b"still here"


async def inboxes(client: httpx.AsyncClient) -> int:
    return (await client.app.state.mailbox.stats()).inboxes  # type: ignore[attr-defined, no-any-return]


async def test_sending_does_not_refresh_the_senders_inbox(make_client: ClientFactory) -> None:
    async with make_client(inbox_timeout=0.4, cleanup_interval=0.05, **NO_WAIT) as client:
        await get(client, "s")
        with anyio.fail_after(5):
            while True:
                await get(client, "r")  # keeps r alive
                if (await post(client, "r", "s", b"ping")).status_code == 404:
                    break
                # s sends all the time, which must not keep its own inbox alive
                await post(client, "s", "r", b"pong")
                await anyio.sleep(0.05)

"""Hypothesis through the whole app, in-process: random Authorization headers and raw query strings.

tests/http/test_auth.py and tests/http/test_query.py fuzz the parsers alone; these send
the same garbage through the ASGI app and check the status the protocol asks
for (SPEC section 2, rules in order: malformed query 400, credentials 401,
missing recipient 400, unknown recipient 404), never a 500 and never an
exception (httpx's ASGITransport re-raises anything the app lets escape).

Every example gets a fresh app, so the expected status depends on the request
alone. The in-memory backend is enough: parsing happens before any backend call.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from inbox_asgi.http.auth import parse_authorization
from inbox_asgi.http.query import parse_query
from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.errors import BadCredentials, MalformedQuery

from .conftest import ClientFactory

pytestmark = pytest.mark.anyio

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
RAW_QUERY = "x-test-raw-query"  # hex of the query_string the wrapper below puts in the scope


@pytest.fixture
def backend() -> dict[str, Any]:
    """Overrides conftest's memory/redis parametrisation: memory only."""
    return {}


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


SCHEMES = st.sampled_from([b"Basic", b"basic", b"BASIC", b"Basic\t", b"Bearer", b"Digest", b""])
SEPARATORS = st.sampled_from([b" ", b"  ", b"\t", b"", b" \x00"])
NAMES = st.one_of(
    st.text(max_size=12),  # any code point, controls and ':' included
    st.text(st.characters(codec="utf-8", exclude_characters=":"), min_size=1, max_size=12),
    st.sampled_from(["peer", "zoë", "a b", "\x7f", "\x00", "\u2028", "\ud7ff", "peer\n"]),
).map(lambda text: text.encode("utf-8", "surrogatepass"))
PASSWORDS = st.one_of(st.text(max_size=12).map(str.encode), st.binary(max_size=12))

#: Authorization header values, from pure noise to almost-right Basic credentials.
AUTHORIZATION = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda scheme, sep, token: scheme + sep + token, SCHEMES, SEPARATORS, st.binary(max_size=60)),
    st.builds(lambda scheme, sep, raw: scheme + sep + b64(raw), SCHEMES, SEPARATORS, st.binary(max_size=60)),
    st.builds(lambda user, pw: b"Basic " + b64(user + b":" + pw), NAMES, PASSWORDS),
    st.builds(lambda user, pw: b"Basic " + b64(user + b":" + pw)[:-1], NAMES, PASSWORDS),  # cut padding
    st.builds(lambda user: b"Basic " + b64(user), NAMES),  # no ':'
)

HEX = "0123456789abcdefABCDEF"
#: One `key=value` field, built from pieces that stress the decoder: escapes good and broken.
PIECES = st.one_of(
    st.text(max_size=6).map(str.encode),
    st.binary(max_size=4),
    st.builds(lambda a, b: f"%{a}{b}".encode(), st.sampled_from(HEX + "gz%&= "), st.sampled_from(HEX + "g")),
    st.sampled_from([b"%", b"%2", b"+", b"%C3", b"%C3%A9", b"%FF", b"%00", b"%26", b"%3D", b"=", b"&"]),
)
FIELDS = st.builds(
    lambda key, sep, value: b"".join(key) + sep + b"".join(value),
    st.lists(PIECES, max_size=3),
    st.sampled_from([b"=", b"", b"=="]),
    st.lists(PIECES, max_size=3),
)
#: Raw query strings: noise, or `&`-joined fields, sometimes with a real `to=`.
QUERY = st.one_of(
    st.binary(max_size=80),
    st.lists(FIELDS, max_size=4).map(b"&".join),
    st.builds(
        lambda fields, to: b"&".join([*fields, b"to=" + to]),
        st.lists(FIELDS, max_size=2),
        st.sampled_from([b"me", b"nobody", b""]),
    ),
)


def raw_query_app(app: Callable[..., Any]) -> Callable[..., Any]:
    """Put the hex-encoded header's bytes in scope["query_string"] exactly.

    httpx percent-encodes or refuses bytes a real client can still put in a
    request target (non-ASCII, control characters); uvicorn passes them on raw.
    """

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if RAW_QUERY.encode() in headers:
                scope = {**scope, "query_string": bytes.fromhex(headers[RAW_QUERY.encode()].decode())}
        await app(scope, receive, send)

    return wrapper


@pytest.fixture
def fresh_client(make_client: ClientFactory) -> Callable[[], Any]:
    """A factory: a client over a brand-new app (long polling off, so GETs answer at once)."""

    @asynccontextmanager
    async def make() -> AsyncIterator[httpx.AsyncClient]:
        async with make_client(long_polling=False) as client:
            transport = httpx.ASGITransport(app=raw_query_app(client.app))  # type: ignore[attr-defined]
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as raw:
                yield raw

    return make


async def send(
    client: httpx.AsyncClient, method: str, query: bytes, authorization: bytes | None, body: bytes = b""
) -> httpx.Response:
    headers = [(RAW_QUERY.encode(), query.hex().encode())]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    return await client.request(method, "/inbox", headers=headers, content=body)


def credentials(authorization: bytes | None) -> Credentials | None:
    try:
        return parse_authorization(authorization)
    except BadCredentials:
        return None


def query_error(query: bytes) -> bool:
    try:
        parse_query(query)
    except MalformedQuery:
        return True
    return False


def assert_refused_with_challenge(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Basic")


@FUZZ
@given(authorization=st.one_of(st.none(), AUTHORIZATION))
async def test_get_with_any_authorization_is_401_or_answered(
    fresh_client: Callable[[], Any], authorization: bytes | None
) -> None:
    async with fresh_client() as client:
        response = await send(client, "GET", b"", authorization)
    if credentials(authorization) is None:
        assert_refused_with_challenge(response)
    else:
        assert response.status_code == 204, response.text


@FUZZ
@given(authorization=st.one_of(st.none(), AUTHORIZATION), body=st.binary(max_size=20))
async def test_post_checks_credentials_before_the_recipient(
    fresh_client: Callable[[], Any], authorization: bytes | None, body: bytes
) -> None:
    async with fresh_client() as client:
        response = await send(client, "POST", b"", authorization, body)
    if credentials(authorization) is None:
        assert_refused_with_challenge(response)
    else:
        assert response.status_code == 400, response.text  # no `to`: valid callers learn that only


@FUZZ
@given(query=QUERY, authorization=st.one_of(st.none(), AUTHORIZATION))
async def test_get_with_any_query_is_400_before_credentials(
    fresh_client: Callable[[], Any], query: bytes, authorization: bytes | None
) -> None:
    async with fresh_client() as client:
        response = await send(client, "GET", query, authorization)
    if query_error(query):
        assert response.status_code == 400, response.text
    elif credentials(authorization) is None:
        assert_refused_with_challenge(response)
    else:
        assert response.status_code == 204, response.text


@FUZZ
@given(query=QUERY, authorization=st.one_of(st.none(), AUTHORIZATION), body=st.binary(max_size=20))
async def test_post_with_any_query_follows_the_order_of_checks(
    fresh_client: Callable[[], Any], query: bytes, authorization: bytes | None, body: bytes
) -> None:
    caller = credentials(authorization)
    async with fresh_client() as client:
        if caller is not None:
            assert (await send(client, "GET", b"", b"Basic " + b64(b"me:pw"))).status_code == 204
        response = await send(client, "POST", query, authorization, body)
    if query_error(query):
        assert response.status_code == 400, response.text
        return
    if caller is None:
        assert_refused_with_challenge(response)
        return
    recipient = parse_query(query).get("to")
    if caller.username == "me" and caller.password != "pw":
        assert_refused_with_challenge(response)  # "me" exists with another password
    elif not recipient:
        assert response.status_code == 400, response.text
    elif recipient in ("me", caller.username):
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 404, response.text

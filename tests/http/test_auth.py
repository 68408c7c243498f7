from __future__ import annotations

import base64
import gc
import weakref

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inbox_asgi.http.auth import TOKEN_CHECKED, Authenticator, authorization_header, parse_authorization
from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.errors import BadCredentials, BadToken, MalformedRequest
from inbox_asgi.tokens import issue

from ..support import ManualClock


def encode(raw: bytes, scheme: bytes = b"Basic") -> bytes:
    return scheme + b" " + base64.b64encode(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"alice:secret", Credentials("alice", "secret")),
        (b"alice:", Credentials("alice", "")),
        (b"alice:pa:ss:word", Credentials("alice", "pa:ss:word")),
        ("zoë:пароль".encode(), Credentials("zoë", "пароль")),
        (b"a b:c", Credentials("a b", "c")),
    ],
)
def test_valid_credentials(raw: bytes, expected: Credentials) -> None:
    assert parse_authorization(encode(raw)) == expected


def test_scheme_is_case_insensitive() -> None:
    assert parse_authorization(encode(b"bob:x", b"bAsIc")).username == "bob"


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"",
        b"Bearer abc",
        b"Basic",
        b"Basic !!!notbase64",
        b"Basic YWxpY2U",  # bad padding
        encode(b"no-colon"),
        encode(b":password"),
        encode(b"\xff\xfe:pw"),
        encode(b"alice:\xff"),
        encode(b"al\x00ice:pw"),
        encode(b"al\nice:pw"),
        encode(b"al\x7fice:pw"),
        encode(b"\x1f:pw"),
    ],
)
def test_malformed_credentials_are_refused(header: bytes | None) -> None:
    with pytest.raises(BadCredentials):
        parse_authorization(header)


@given(st.binary(max_size=200))
def test_any_header_parses_or_raises_bad_credentials(header: bytes) -> None:
    try:
        credentials = parse_authorization(header)
    except BadCredentials:
        return
    assert credentials.username
    assert ":" not in credentials.username


@given(st.binary(max_size=100))
def test_any_basic_payload_parses_or_raises_bad_credentials(payload: bytes) -> None:
    try:
        credentials = parse_authorization(encode(payload))
    except BadCredentials:
        return
    assert f"{credentials.username}:{credentials.password}".encode() == payload


def test_credentials_carry_the_client_network() -> None:
    assert parse_authorization(encode(b"alice:pw"), "10.0.0.1") == Credentials("alice", "pw", "10.0.0.1")


def test_nothing_keeps_credentials_or_the_header_after_parsing() -> None:
    """SPEC 6: no password outlives its request. A cache keyed by the header would keep both."""
    header = bytearray(encode(b"alice:" + b"p" * 100_000))
    credentials = parse_authorization(bytes(header))
    gone = weakref.ref(credentials)
    del credentials
    gc.collect()
    assert gone() is None


def test_one_authorization_header_is_found() -> None:
    headers = [(b"host", b"x"), (b"authorization", b"Basic abc"), (b"accept", b"*/*")]
    assert authorization_header(headers) == b"Basic abc"
    assert authorization_header([(b"host", b"x")]) is None


def test_two_authorization_headers_are_malformed() -> None:
    with pytest.raises(MalformedRequest, match="two Authorization headers"):
        authorization_header([(b"authorization", b"Basic YTpi"), (b"authorization", b"Basic YzpK")])


def test_without_secrets_the_password_goes_to_the_mailbox_as_given() -> None:
    authenticator = Authenticator()
    credentials = authenticator.credentials(encode(b"alice:pw"), "10.0.0.1")
    assert credentials == Credentials("alice", "pw", "10.0.0.1")


def test_with_secrets_a_token_is_checked_and_never_reaches_the_mailbox() -> None:
    clock = ManualClock(1_800_000_000)
    authenticator = Authenticator(["k"], clock=clock)
    token = issue("k", "alice", 60, now=clock.now)
    credentials = authenticator.credentials(encode(f"alice:{token}".encode()), "10.0.0.1")
    assert credentials == Credentials("alice", TOKEN_CHECKED, "10.0.0.1")
    # A renewed token for the same name opens the same inbox: the mailbox sees the same password.
    renewed = issue("k", "alice", 120, now=clock.now)
    assert authenticator.credentials(encode(f"alice:{renewed}".encode())).password == TOKEN_CHECKED
    assert authenticator.tokens_refused == 0


def test_an_expired_token_is_refused_and_counted() -> None:
    clock = ManualClock(1_800_000_000)
    authenticator = Authenticator(["k"], clock=clock)
    header = encode(f"alice:{issue('k', 'alice', 60, now=clock.now)}".encode())
    authenticator.credentials(header)
    clock.now += 61
    with pytest.raises(BadToken):
        authenticator.credentials(header)
    with pytest.raises(BadToken):
        authenticator.credentials(encode(b"alice:a-password-is-not-a-token"))
    assert authenticator.tokens_refused == 2


def test_malformed_basic_credentials_are_not_counted_as_tokens() -> None:
    authenticator = Authenticator(["k"])
    with pytest.raises(BadCredentials):
        authenticator.credentials(b"Bearer abc")
    assert authenticator.tokens_refused == 0

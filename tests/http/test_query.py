from __future__ import annotations

import contextlib
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inbox_asgi.http.query import parse_query
from inbox_asgi.mailbox.errors import MalformedQuery


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", {}),
        (b"to=bob", {"to": "bob"}),
        (b"to=", {"to": ""}),
        (b"to", {"to": ""}),
        (b"to=a&to=b", {"to": "a"}),
        (b"to=b%C3%B6b&x=1", {"to": "böb", "x": "1"}),
        (b"to=a+b", {"to": "a b"}),
        (b"to=a%2Bb%26c", {"to": "a+b&c"}),
        (b"&&to=x&", {"to": "x"}),
    ],
)
def test_parses(raw: bytes, expected: dict[str, str]) -> None:
    assert parse_query(raw) == expected


@pytest.mark.parametrize("raw", [b"to=%", b"to=%4", b"to=%zz", b"to=%C3", b"to=%ff", b"%=x", b"to=a%2"])
def test_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedQuery):
        parse_query(raw)


@given(st.text())
def test_round_trips_what_urlencode_writes(value: str) -> None:
    assert parse_query(urllib.parse.urlencode({"to": value}).encode()) == {"to": value}


@given(st.binary(max_size=100))
def test_any_bytes_parse_or_raise_malformed_query(raw: bytes) -> None:
    with contextlib.suppress(MalformedQuery):
        parse_query(raw)

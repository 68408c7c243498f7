"""inbox_asgi.tokens: the token and TURN credential formulas of SPEC sections 7 and 8.

The expected values are computed here from the SPEC's words with the standard
library, not with the module's helpers, so a change to the formula fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inbox_asgi import tokens
from inbox_asgi.tokens import TokenVerifier, issue, parse_secrets, turn_credential

NOW = 1_800_000_000


def spec_token(secret: str, expiry: int, username: str) -> str:
    mac = hmac.new(secret.encode(), f"{expiry}:{username}".encode(), hashlib.sha256).digest()
    return f"{expiry}:{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def test_issue_follows_the_spec_formula() -> None:
    token = issue("s3cret", "alice", 60, now=NOW)
    assert token == spec_token("s3cret", NOW + 60, "alice")
    assert "=" not in token and "+" not in token and "/" not in token


def test_issue_signs_utf8_usernames() -> None:
    assert issue("k", "zoë 🎥", 10, now=NOW) == spec_token("k", NOW + 10, "zoë 🎥")


def test_the_first_of_several_secrets_signs() -> None:
    assert issue(" new , old ", "bob", 5, now=NOW) == spec_token("new", NOW + 5, "bob")


@pytest.mark.parametrize("ttl", [0, -1])
def test_issue_refuses_a_useless_ttl(ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl"):
        issue("k", "bob", ttl)


def test_issue_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        issue(" , ", "bob", 5)


def test_parse_secrets_strips_and_drops_empty_entries() -> None:
    assert parse_secrets(" a ,b,, c\n") == ("a", "b", "c")
    assert parse_secrets("") == ()


verifier = TokenVerifier(("current", "previous"))


def test_a_valid_token_opens_only_its_own_username() -> None:
    token = spec_token("current", NOW + 60, "alice")
    assert verifier.valid("alice", token, NOW)
    assert not verifier.valid("bob", token, NOW)
    assert not verifier.valid("alice ", token, NOW)


def test_every_configured_secret_verifies() -> None:
    assert verifier.valid("alice", spec_token("previous", NOW + 60, "alice"), NOW)
    assert not verifier.valid("alice", spec_token("retired", NOW + 60, "alice"), NOW)


def test_expiry_is_inclusive_and_then_refused() -> None:
    token = spec_token("current", NOW, "alice")
    assert verifier.valid("alice", token, NOW)
    assert not verifier.valid("alice", token, NOW + 1)


@pytest.mark.parametrize(
    "token",
    [
        "",
        ":",
        "not-a-token",
        f"{NOW}:",
        f":{spec_token('current', NOW, 'alice').split(':')[1]}",
        f"-{NOW}:" + "A" * 43,
        f"{NOW}.0:" + "A" * 43,
        "1" * 40 + ":" + "A" * 43,  # an expiry too long to bother parsing
        "١٢٣:" + "A" * 43,  # non-ASCII digits
        spec_token("current", NOW + 60, "alice") + "=",  # padded
        spec_token("current", NOW + 60, "alice")[:-1] + "é",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert not verifier.valid("alice", token, NOW)


def test_the_signature_covers_the_expiry_exactly_as_written() -> None:
    """A token whose EXPIRY is re-spelled (leading zero) is not the token that was signed."""
    expiry, signature = spec_token("current", NOW + 60, "alice").split(":")
    assert not verifier.valid("alice", f"0{expiry}:{signature}", NOW)


@given(position=st.integers(min_value=0), replacement=st.characters(codec="utf-8"))
def test_any_single_character_change_is_refused(position: int, replacement: str) -> None:
    token = spec_token("current", NOW + 60, "alice")
    index = position % len(token)
    if token[index] == replacement:
        return
    tampered = token[:index] + replacement + token[index + 1 :]
    assert not verifier.valid("alice", tampered, NOW)


@given(st.text(max_size=80))
def test_arbitrary_text_is_never_a_token(text: str) -> None:
    assert not verifier.valid("alice", text, NOW)


def test_turn_credential_is_coturns_rest_api_formula() -> None:
    username, credential = turn_credential("turn-secret", "alice", 3600, now=NOW)
    assert username == f"{NOW + 3600}:alice"
    expected = hmac.new(b"turn-secret", username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(credential, validate=True) == expected


def test_the_module_exports_issue_for_python_backends() -> None:
    assert tokens.issue is issue
    assert "issue" in tokens.__all__

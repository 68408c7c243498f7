from __future__ import annotations

from inbox_asgi.mailbox.passwords import PasswordDigest


def test_matches_only_the_same_password() -> None:
    digest = PasswordDigest.of("s3cret")
    assert digest.matches("s3cret")
    assert not digest.matches("s3cret ")
    assert not digest.matches("")


def test_salted_and_not_clear_text() -> None:
    first, second = PasswordDigest.of("same"), PasswordDigest.of("same")
    assert first.salt != second.salt
    assert first.digest != second.digest
    assert b"same" not in first.to_bytes()


def test_round_trips_through_bytes() -> None:
    digest = PasswordDigest.of("pw")
    restored = PasswordDigest.from_bytes(digest.to_bytes())
    assert restored == digest
    assert restored.matches("pw")

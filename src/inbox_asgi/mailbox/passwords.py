"""Salted password digests, so no inbox password is kept in clear.

Inbox passwords are per-session random secrets checked on every request, so a
slow KDF (bcrypt, scrypt) would dominate the request cost without protecting
anything a leaked memory image would not already expose. A salted BLAKE2b
digest compared in constant time is the right trade here.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from hashlib import blake2b

SALT_BYTES = 16


def _digest(password: str, salt: bytes) -> bytes:
    return blake2b(password.encode(), digest_size=32, salt=salt).digest()


@dataclass(frozen=True, slots=True)
class PasswordDigest:
    salt: bytes
    digest: bytes

    @classmethod
    def of(cls, password: str, salt: bytes | None = None) -> PasswordDigest:
        """A fresh random salt, or a given one (to compare against a stored digest)."""
        salt = os.urandom(SALT_BYTES) if salt is None else salt
        return cls(salt, _digest(password, salt))

    def matches(self, password: str) -> bool:
        return hmac.compare_digest(self.digest, _digest(password, self.salt))

    def to_bytes(self) -> bytes:
        return self.salt + self.digest

    @classmethod
    def from_bytes(cls, raw: bytes) -> PasswordDigest:
        return cls(raw[:SALT_BYTES], raw[SALT_BYTES:])

"""HTTP Basic credentials, parsed strictly so every malformed header is a 401."""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from functools import lru_cache

from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.errors import BadCredentials

# Usernames must not carry control characters: they end up in X-From headers and logs.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def parse_authorization(header: bytes | None) -> Credentials:
    """Turn an Authorization header value into Credentials or raise BadCredentials."""
    if header is None:
        raise BadCredentials("missing Authorization header")
    return _parse(header)


# Clients repeat the same header on every poll; decoding it once saves work on the hot path.
@lru_cache(maxsize=8192)
def _parse(header: bytes) -> Credentials:
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        raise BadCredentials("Authorization is not Basic")
    try:
        decoded = b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadCredentials("Basic credentials are not valid base64") from None
    raw_username, colon, raw_password = decoded.partition(b":")
    if not colon:
        raise BadCredentials("Basic credentials lack a ':' separator")
    try:
        username = raw_username.decode()
        password = raw_password.decode()
    except UnicodeDecodeError:
        raise BadCredentials("Basic credentials are not UTF-8") from None
    if not username:
        raise BadCredentials("empty username")
    if _CONTROL.search(username):
        raise BadCredentials("control character in username")
    return Credentials(username, password)

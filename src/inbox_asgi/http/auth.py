"""HTTP Basic credentials, parsed strictly so every malformed header is a 401.

Nothing here caches: a cache keyed by the header would keep every password
(and every big Authorization header) a client ever sent in memory, in clear.
Parsing costs about a microsecond, and the mailbox checks a salted digest.
"""

from __future__ import annotations

import binascii
import re
import time
from collections.abc import Callable, Iterable, Sequence

from inbox_asgi.mailbox.credentials import Credentials
from inbox_asgi.mailbox.errors import BadCredentials, BadToken, MalformedRequest
from inbox_asgi.tokens import TokenVerifier

# Usernames must not carry control characters: they end up in X-From headers and logs.
_CONTROL = re.compile("[\x00-\x1f\x7f]")

TWO_AUTHORIZATIONS = "two Authorization headers"


def authorization_header(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The request's Authorization header, or None; two of them are a MalformedRequest.

    With two, each reader could pick a different one (the endpoint one user,
    the access log another), so the request is refused outright.
    """
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                raise MalformedRequest(TWO_AUTHORIZATIONS)
            found = value
    return found


def parse_authorization(header: bytes | None, network: str = "") -> Credentials:
    """Turn an Authorization header value into Credentials or raise BadCredentials.

    `network` is the client's network (see client_ip.client_network), carried along
    for the per-client inbox limit.
    """
    if header is None:
        raise BadCredentials("missing Authorization header")
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        raise BadCredentials("Authorization is not Basic")
    try:
        # What b64decode(validate=True) accepts, without its regular expression: this
        # runs on every request now that nothing caches it.
        decoded = binascii.a2b_base64(token.strip(), strict_mode=True)
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
    if not username.isprintable() and _CONTROL.search(username):  # printable: no control character
        raise BadCredentials("control character in username")
    return Credentials(username, password, network)


#: The password every inbox gets when access tokens are on: the token was checked
#: instead, and any valid token for the name opens it (SPEC section 7).
TOKEN_CHECKED = ""


class Authenticator:
    """Authorization header → Credentials for the mailbox, checking access tokens when they are on.

    With -auth-secret the Basic password is a token: it is verified here, and the
    mailbox sees one fixed password, so a client may renew its token mid-session
    and no token is stored. Without, the password goes to the mailbox as given.
    """

    def __init__(self, secrets: Sequence[str] = (), clock: Callable[[], float] = time.time) -> None:
        self.verifier = TokenVerifier(tuple(secrets)) if secrets else None
        self.clock = clock
        #: Requests refused for their token (for /metrics).
        self.tokens_refused = 0

    def credentials(self, header: bytes | None, network: str = "") -> Credentials:
        credentials = parse_authorization(header, network)
        if self.verifier is None:
            return credentials
        if not self.verifier.valid(credentials.username, credentials.password, self.clock()):
            self.tokens_refused += 1
            raise BadToken
        return Credentials(credentials.username, TOKEN_CHECKED, network)

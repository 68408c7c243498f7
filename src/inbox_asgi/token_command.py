"""`inbox-asgi token --user U --ttl SECONDS`: print an access token, as the operator's backend would.

The secret is read exactly as the server reads it (-auth-secret, -auth-secret-file,
INBOX_AUTH_SECRET, INBOX_AUTH_SECRET_FILE), so a token from here opens the inbox
on a server started with the same configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from inbox_asgi import tokens
from inbox_asgi.config import ENV_PREFIX, ConfigError, read_secrets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inbox-asgi token",
        description="Print an access token for one username (SPEC section 7).",
        epilog="The secret comes from the flags, else INBOX_AUTH_SECRET or INBOX_AUTH_SECRET_FILE.",
        allow_abbrev=False,
    )
    parser.add_argument("-user", "--user", required=True, help="the username the token opens")
    parser.add_argument("-ttl", "--ttl", required=True, type=int, help="seconds the token is valid")
    parser.add_argument("-auth-secret", "--auth-secret", default=None, metavar="SECRETS")
    parser.add_argument("-auth-secret-file", "--auth-secret-file", default=None, metavar="PATH")
    return parser


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
    environ = os.environ if environ is None else environ
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.ttl <= 0:
        parser.error("--ttl must be greater than zero")
    if ":" in arguments.user or not arguments.user:
        parser.error("--user must be a non-empty name without ':'")
    given = arguments.auth_secret is not None or arguments.auth_secret_file is not None
    value = arguments.auth_secret if given else environ.get(ENV_PREFIX + "AUTH_SECRET")
    path = arguments.auth_secret_file if given else environ.get(ENV_PREFIX + "AUTH_SECRET_FILE")
    try:
        secrets = read_secrets(value or None, path or None, "auth-secret")
    except ConfigError as error:
        print(f"inbox-asgi token: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if not secrets:
        print(f"inbox-asgi token: no secret: {parser.epilog}", file=sys.stderr)
        raise SystemExit(2)
    print(tokens.issue(secrets[0], arguments.user, arguments.ttl))

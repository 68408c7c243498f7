"""`inbox-asgi [flags]`: Go-style flags → Settings → uvicorn, with TLS passed in directly."""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from inbox_asgi import __version__
from inbox_asgi.config import ConfigError, Settings, describe, option_specs
from inbox_asgi.http.websocket import frame_limit
from inbox_asgi.server.fences import http_protocol
from inbox_asgi.server.protocol import HttpProtocol
from inbox_asgi.server.resources import raise_open_file_limit
from inbox_asgi.server.tls import check_certificate_files, write_self_signed

logger = logging.getLogger("inbox_asgi")

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
#: Seconds uvicorn waits for open connections to close on shutdown.
GRACEFUL_SHUTDOWN = 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    """Every flag as -name, --name, -name=value and --name=value; booleans also bare."""
    parser = argparse.ArgumentParser(
        prog="inbox-asgi",
        description="WebRTC signaling server: password-protected HTTP inboxes with long polling.",
        epilog="Every flag can also be set as an INBOX_<NAME> environment variable; flags win. "
        "`inbox-asgi token --user U --ttl SECONDS` prints an access token (see -auth-secret).",
        allow_abbrev=False,
    )
    parser.add_argument("-version", "--version", action="version", version=f"inbox-asgi {__version__}")
    for name, default, help_text, is_bool in option_specs():
        extra = {"nargs": "?", "const": "true", "metavar": "BOOL"} if is_bool else {"metavar": "VALUE"}
        parser.add_argument(
            f"-{name}",
            f"--{name}",
            dest=name.replace("-", "_"),
            default=None,
            help=f"{help_text} (default {default or 'unset'})",
            **extra,  # type: ignore[arg-type]
        )
    return parser


def parse_settings(argv: Sequence[str], environ: dict[str, str] | None = None) -> Settings:
    """Defaults, then INBOX_* variables, then flags."""
    environ = dict(os.environ) if environ is None else environ
    base = Settings.from_env(environ)
    arguments = vars(build_parser().parse_args(argv))
    given = {key.replace("_", "-"): value for key, value in arguments.items() if value is not None}
    if not given:
        return base
    merged = _as_strings(base)
    merged.update(given)
    return Settings.from_strings(merged)


def _as_strings(settings: Settings) -> dict[str, str]:
    return {key[len("INBOX_") :].lower().replace("_", "-"): value for key, value in settings.to_env().items()}


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        from inbox_asgi import token_command

        token_command.main(argv[1:])
        return
    try:
        settings = parse_settings(argv)
        run(settings)
    except ConfigError as error:
        print(f"inbox-asgi: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def log_config(settings: Settings) -> dict[str, Any]:
    """Logging as a dictConfig: uvicorn applies it in every process, `-workers` included.

    Everything goes to stderr through the root logger at -log-level; the access
    log (`inbox_asgi.access`) at INFO when -access-log asks for it.
    """
    level: int | str = 5 if settings.log_level == "trace" else settings.log_level.upper()  # uvicorn's TRACE
    loggers: dict[str, Any] = {}
    if settings.access_log:
        loggers["inbox_asgi.access"] = {"level": "INFO"}
    return {
        "version": 1,
        # Loggers made at import (inbox_asgi, uvicorn.error) must keep working.
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": loggers,
    }


def run(settings: Settings) -> None:
    logging.addLevelName(5, "TRACE")
    logging.config.dictConfig(log_config(settings))
    certfile = keyfile = None
    if settings.https:
        if settings.self_signed:
            cert_path, key_path = write_self_signed()
            certfile, keyfile = str(cert_path), str(key_path)
            logger.warning("serving a throw-away self-signed certificate for localhost: %s", certfile)
        else:
            check_certificate_files(settings.server_cert, settings.server_key)
            certfile, keyfile = settings.server_cert, settings.server_key
    _check_redis(settings)
    scheme = "https" if settings.https else "http"
    logger.info("inbox-asgi %s listening on %s://%s:%d", __version__, scheme, settings.host, settings.port)
    for name, value in describe(settings):
        logger.info("  %-22s %s", name, value)
    logger.info("  %-22s %d", "open-files", raise_open_file_limit())
    HttpProtocol.configure(settings)  # this process; workers configure from INBOX_*

    # Workers are separate processes: they rebuild the same Settings from INBOX_* variables.
    os.environ.update(settings.to_env())
    # uvicorn re-raises the signal that stopped it once it has shut down; a
    # graceful stop is a success, so exit 0 instead of dying by the signal.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_cleanly)
    uvicorn.run(
        "inbox_asgi.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop=_loop_factory(settings),
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        # Forward-secret AEAD suites only for TLS 1.2 (1.3 has its own); Python
        # already refuses anything older than TLS 1.2.
        ssl_ciphers=TLS12_CIPHERS,
        http=http_protocol(HttpProtocol),
        # The client address is decided by -trust-proxy in the app, not by uvicorn.
        proxy_headers=False,
        log_level=settings.log_level,
        access_log=False,  # -access-log is the app's own logfmt line, with the username
        lifespan="on",
        # Waiting readers are answered at once on SIGTERM; what may remain are TLS
        # connections whose peers never answer close_notify, not worth waiting for.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        timeout_keep_alive=settings.keep_alive_timeout,
        server_header=False,
        # /inbox/ws: uvicorn refuses (1009) a frame over the limit before buffering it
        # (its default is 16 MiB per frame), and no compression: per-message deflate
        # keeps zlib state in both directions for every open socket (~100s of KiB each).
        ws_max_size=frame_limit(settings.max_body_size),
        ws_per_message_deflate=False,
        log_config=log_config(settings),
    )


def _loop_factory(settings: Settings) -> str:
    """One process accepts every waiting connection per loop turn; several share the
    socket better with libuv's one each (see eventloop). Both bound TLS handshakes."""
    name = "new_event_loop" if settings.workers == 1 else "new_worker_loop"
    return f"inbox_asgi.server.eventloop:{name}"


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _check_redis(settings: Settings) -> None:
    """Refuse to start against a Redis that does not answer, rather than 503 every request."""
    if not settings.redis_url:
        return
    from inbox_asgi.mailbox.redis.connection import check_connection

    check_connection(settings.redis_url)

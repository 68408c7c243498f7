"""`python -m inbox_asgi.healthcheck`: exit 0 when the local server answers /healthz.

For container HEALTHCHECKs: reads the same INBOX_* settings as the server, so
it follows -https and -bind without repeating them.
"""

from __future__ import annotations

import ssl
import sys
import urllib.request

from inbox_asgi.config import ConfigError, Settings


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"healthcheck: {error}", file=sys.stderr)
        return 2
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if settings.https else "http"
    context = None
    if settings.https:
        # The certificate names the public host, not loopback: only liveness is checked here.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(
            f"{scheme}://{host}:{settings.port}/healthz", timeout=5, context=context
        ) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"healthcheck: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

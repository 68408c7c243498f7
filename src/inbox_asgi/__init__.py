"""inbox-asgi: a WebRTC signaling server of password-protected HTTP inboxes.

`uvicorn inbox_asgi:app` serves an app configured from INBOX_* variables; it
is built on first access so importing the package (e.g. for the client) costs
nothing.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Settings", "__version__", "app", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from inbox_asgi.app import create_app

        app = create_app()
        globals()["app"] = app
        return app
    if name == "create_app":
        from inbox_asgi.app import create_app

        return create_app
    if name == "Settings":
        from inbox_asgi.config import Settings

        return Settings
    raise AttributeError(name)

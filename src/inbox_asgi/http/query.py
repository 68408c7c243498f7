"""Strict query-string parsing: a broken query is refused, never guessed at."""

from __future__ import annotations

import re

from inbox_asgi.mailbox.errors import MalformedQuery

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")


def _byte(match: re.Match[bytes]) -> bytes:
    return bytes((int(match.group(1), 16),))


def _unescape(part: str) -> str:
    if "+" in part:
        part = part.replace("+", " ")
    if "%" in part:
        try:
            return _ESCAPE.sub(_byte, part.encode()).decode()
        except UnicodeDecodeError:
            raise MalformedQuery("query value is not UTF-8") from None
    return part


def parse_query(raw: bytes) -> dict[str, str]:
    """Decode `a=b&c=d`; the first occurrence of a key wins, like Go's Query().Get."""
    if not raw:
        return {}
    # Checks on the decoded text: `in` on str is cheap, on bytes it is not.
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise MalformedQuery("query value is not UTF-8") from None
    has_percent = "%" in text
    if has_percent and _BAD_ESCAPE.search(text):
        raise MalformedQuery("'%' in the query is not followed by two hex digits")
    escaped = has_percent or "+" in text
    params: dict[str, str] = {}
    for field in text.split("&"):
        if field:
            key, _, value = field.partition("=")
            if escaped:
                key, value = _unescape(key), _unescape(value)
            params.setdefault(key, value)
    return params

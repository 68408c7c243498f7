"""Strict query-string parsing: a broken query is refused, never guessed at."""

from __future__ import annotations

import re

from .errors import MalformedQuery

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")


def _unescape(raw: bytes) -> str:
    raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        raw = _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), raw)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise MalformedQuery("query value is not UTF-8") from None


def parse_query(raw: bytes) -> dict[str, str]:
    """Decode `a=b&c=d`; the first occurrence of a key wins, like Go's Query().Get."""
    if not raw:
        return {}
    if _BAD_ESCAPE.search(raw):
        raise MalformedQuery("'%' in the query is not followed by two hex digits")
    params: dict[str, str] = {}
    for field in raw.split(b"&"):
        if not field:
            continue
        key, _, value = field.partition(b"=")
        params.setdefault(_unescape(key), _unescape(value))
    return params

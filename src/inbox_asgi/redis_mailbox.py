"""Placeholder until the Redis backend (issue 4) lands: refuse -redis-url clearly."""

from __future__ import annotations

from .config import ConfigError, Settings
from .mailbox import Mailbox


class RedisMailbox:
    @classmethod
    def from_settings(cls, settings: Settings) -> Mailbox:
        raise ConfigError("-redis-url: the Redis backend is not available in this build yet")


def check_connection(url: str) -> None:
    raise ConfigError("-redis-url: the Redis backend is not available in this build yet")

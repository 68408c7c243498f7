from __future__ import annotations

from pathlib import Path

import pytest

from inbox_asgi.config import ConfigError, Settings, describe, parse_bind, parse_cors


def test_defaults_match_the_go_server() -> None:
    settings = Settings()
    assert settings.bind == ("0.0.0.0", 3000)
    assert settings.https is True
    assert (settings.server_cert, settings.server_key) == ("server.crt", "server.key")
    assert settings.cleanup_interval == 1
    assert settings.inbox_timeout == 60
    assert settings.inbox_capacity == 100
    assert settings.long_polling is True
    assert settings.max_body_size == 10240
    assert settings.max_header_size == 1048576
    assert settings.public == "public"
    assert settings.cors == ()
    assert settings.long_polling_timeout < 60


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.0.0.0:3000", ("0.0.0.0", 3000)),
        (":8080", ("0.0.0.0", 8080)),
        ("[::1]:443", ("::1", 443)),
        ("localhost:1", ("localhost", 1)),
        ("example.org:80", ("example.org", 80)),
    ],
)
def test_bind(raw: str, expected: tuple[str, int]) -> None:
    assert parse_bind(raw) == expected


@pytest.mark.parametrize("raw", ["3000", "host:", "host:port", ":70000", "bad host!:80", ":-1"])
def test_bad_bind(raw: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_bind(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", ("*",)),
        ("false", ()),
        ("", ()),
        ("https://a.example, http://b.example:8080/", ("https://a.example", "http://b.example:8080")),
    ],
)
def test_cors(raw: str, expected: tuple[str, ...]) -> None:
    assert parse_cors(raw) == expected


def test_from_env_reads_inbox_variables() -> None:
    settings = Settings.from_env(
        {"INBOX_INBOX_CAPACITY": "5", "INBOX_LONG_POLLING": "false", "INBOX_CORS": "true", "OTHER": "x"}
    )
    assert settings.inbox_capacity == 5
    assert settings.long_polling is False
    assert settings.long_poll_wait == 0
    assert settings.cors == ("*",)


def test_env_round_trip() -> None:
    settings = Settings.from_strings(
        {
            "bind": "[::1]:9",
            "cors": "https://x.example",
            "redis-url": "redis://h/0",
            "workers": "3",
            "auth-secret": "a,b",
            "stun-urls": "stun:s1, stun:s2:3478",
            "turn-urls": "turn:t?transport=udp,turns:t:5349",
            "turn-secret": "k",
        }
    )
    assert Settings.from_env(settings.to_env()) == settings
    assert settings.stun_urls == ("stun:s1", "stun:s2:3478")
    assert settings.auth_secrets() == ("a", "b")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max-body-size": "-1"}, "max-body-size"),
        ({"inbox-capacity": "-1"}, "inbox-capacity"),
        ({"max-queued-bytes": "0"}, "max-queued-bytes"),
        ({"max-header-count": "0"}, "max-header-count"),
        ({"inbox-timeout": "soon"}, "inbox-timeout"),
        ({"https": "maybe"}, "https"),
        ({"bind": "nowhere"}, "bind"),
        ({"log-level": "loud"}, "log-level"),
        ({"workers": "2"}, "redis-url"),
        ({"max-header-size": "10"}, "max-header-size"),
        ({"no-such-flag": "1"}, "no-such-flag"),
    ],
)
def test_invalid_settings_name_the_setting(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_strings(values)


def test_start_up_description_hides_url_passwords() -> None:
    settings = Settings.from_strings({"redis-url": "redis://default:hunter2@cache.internal:6379/0"})
    shown = dict(describe(settings))
    assert shown["redis-url"] == "redis://default:***@cache.internal:6379/0"
    assert "hunter2" not in str(describe(settings))


def test_start_up_description_hides_secrets(tmp_path: Path) -> None:
    secret_file = tmp_path / "turn"
    secret_file.write_text("file-secret\n")
    settings = Settings.from_strings(
        {"auth-secret": "hunter2,hunter3", "turn-urls": "turn:t", "turn-secret-file": str(secret_file)}
    )
    shown = dict(describe(settings))
    assert shown["auth-secret"] == "(set)"
    assert shown["turn-secret-file"] == str(secret_file)  # a path is not the secret
    assert shown["turn-secret"] == "-"
    assert "hunter" not in str(describe(settings))
    assert settings.turn_secrets() == ("file-secret",)

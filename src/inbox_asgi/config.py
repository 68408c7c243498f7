"""Settings: one frozen dataclass built from Go-style flags or INBOX_* variables.

Values flow one way: strings (flags, environment) → `Settings.from_strings` →
`create_app`. Every value is validated here so a bad deployment fails at
start-up with a message, not later with a traceback.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "INBOX_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class ConfigError(ValueError):
    """A setting that cannot work; the message names the setting."""


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "t", "true", "yes", "on"):
        return True
    if value in ("0", "f", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def parse_bind(raw: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all interfaces), as Go's net.Listen takes it."""
    host, sep, port_text = raw.strip().rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT, got {raw!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not all(part.isalnum() or part == "-" for part in host.replace(".", " ").split()):
                raise ValueError(f"not an IP address or host name: {host!r}") from None
    return host, port


def parse_cors(raw: str) -> tuple[str, ...]:
    """`true` → ("*",), `false`/empty → (), otherwise the listed origins."""
    text = raw.strip()
    try:
        return ("*",) if parse_bool(text) else ()
    except ValueError:
        pass
    origins = tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())
    for origin in origins:
        if "://" not in origin:
            raise ValueError(f"CORS origin must look like scheme://host[:port], got {origin!r}")
    return origins


def _non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if value < 0:
            raise ValueError(f"must not be negative, got {raw!r}")
        return value

    return parse


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if value <= 0:
            raise ValueError(f"must be greater than zero, got {raw!r}")
        return value

    return parse


def _optional_str(raw: str) -> str | None:
    return raw.strip() or None


def _url_list(*schemes: str) -> Callable[[str], tuple[str, ...]]:
    """Comma-separated ICE server URLs, each with one of `schemes` (`stun:…`, `turn:…`)."""

    def parse(raw: str) -> tuple[str, ...]:
        urls = tuple(url.strip() for url in raw.split(",") if url.strip())
        prefixes = tuple(f"{scheme}:" for scheme in schemes)
        for url in urls:
            if not url.startswith(prefixes) or not url.partition(":")[2]:
                raise ValueError(f"expected {' or '.join(prefixes)}HOST[:PORT] URLs, got {url!r}")
        return urls

    return parse


def read_secrets(value: str | None, path: str | None, flag: str) -> tuple[str, ...]:
    """Secrets from `-FLAG` or `-FLAG-file` (the same comma-separated text), never both.

    Read on demand rather than kept in Settings: the file's content is not a
    setting to log, pass to workers or show in an error.
    """
    if value and path:
        raise ConfigError(f"set -{flag} or -{flag}-file, not both")
    raw = value or ""
    if path:
        try:
            raw = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read -{flag}-file {path}: {error.__class__.__name__}") from None
    secrets = tuple(part.strip() for part in raw.split(",") if part.strip())
    if path and not secrets:
        raise ConfigError(f"-{flag}-file {path} holds no secret")
    return secrets


def _log_level(raw: str) -> str:
    level = raw.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return level


def _option(
    default: str, parse: Callable[[str], Any], help: str, *, flag: bool = False, secret: bool = False
) -> Any:
    """A dataclass field that also knows its flag text, parser and help; a secret is never logged."""
    return field(
        default=parse(default),
        metadata={"raw_default": default, "parse": parse, "help": help, "is_bool": flag, "secret": secret},
    )


@dataclass(frozen=True, slots=True)
class Settings:
    # The Go server's flags, same names and defaults.
    bind: tuple[str, int] = _option("0.0.0.0:3000", parse_bind, "address and port to listen on")
    https: bool = _option("true", parse_bool, "serve HTTPS with --server-cert/--server-key", flag=True)
    server_cert: str = _option("server.crt", str, "TLS certificate file (PEM, chain allowed)")
    server_key: str = _option("server.key", str, "TLS private key file (PEM)")
    cleanup_interval: float = _option("1", _positive(float), "seconds between expiry passes")
    inbox_timeout: float = _option(
        "60",
        _positive(float),
        "seconds without a read before an inbox is deleted",
    )
    inbox_capacity: int = _option(
        "100", _non_negative(int), "most messages one inbox holds (0: only hand-off to a waiting reader)"
    )
    long_polling: bool = _option("true", parse_bool, "GET waits for a message", flag=True)
    max_body_size: int = _option(
        "10240", _non_negative(int), "largest message, bytes (its Content-Type included)"
    )
    max_header_size: int = _option("1048576", _positive(int), "largest request head, bytes (431 beyond)")
    public: str = _option("public", str, "static directory (bundled demo if missing)")
    cors: tuple[str, ...] = _option(
        "false",
        parse_cors,
        "true, false or comma-separated allowed origins",
        flag=True,
    )
    # What a deployment of the Python server needs on top.
    long_polling_timeout: float = _option("25", _positive(float), "seconds a GET waits before answering 204")
    keep_alive_timeout: int = _option(
        "60", _positive(int), "seconds an idle keep-alive connection stays open"
    )
    max_inboxes: int = _option(
        "100000",
        _positive(int),
        "most inboxes held at once (503 for new names beyond)",
    )
    max_header_count: int = _option("100", _positive(int), "most header lines in a request head (431 beyond)")
    max_queued_bytes: int = _option(
        "268435456",
        _positive(int),
        "most bytes all queued messages hold together, overhead included (503 beyond); "
        "in Redis mode Redis's maxmemory is the bound",
    )
    max_inboxes_per_ip: int = _option(
        "1000",
        _non_negative(int),
        "most inboxes created from one client IP (IPv6: one /64) held at once, 0 for no limit (429 beyond)",
    )
    header_timeout: float = _option(
        "10", _positive(float), "seconds a client gets to send a request head or finish a TLS handshake"
    )
    body_timeout: float = _option(
        "10", _positive(float), "seconds a client gets to send a POST body (408 beyond)"
    )
    rate_limit: float = _option(
        "0",
        _non_negative(float),
        "requests per second per client IP on /inbox and /ice-servers, 0 for no limit (429 beyond)",
    )
    rate_burst: int = _option(
        "20", _positive(int), "requests a client IP may send at once before -rate-limit applies"
    )
    trust_proxy: bool = _option(
        "false", parse_bool, "take the client IP from the last X-Forwarded-For entry", flag=True
    )
    redis_url: str | None = _option(
        "",
        _optional_str,
        "redis://… or rediss://… (any node of a Redis Cluster too) to share state between workers and hosts",
    )
    workers: int = _option("1", _positive(int), "uvicorn worker processes (needs --redis-url beyond 1)")
    log_level: str = _option("info", _log_level, "critical, error, warning, info, debug or trace")
    self_signed: bool = _option(
        "false",
        parse_bool,
        "serve HTTPS with a throw-away localhost certificate",
        flag=True,
    )
    metrics: bool = _option("false", parse_bool, "serve Prometheus metrics at /metrics", flag=True)
    access_log: bool = _option(
        "false", parse_bool, "log one logfmt line per request (client, user, status, ms)", flag=True
    )
    # Internet deployment (SPEC sections 7 and 8).
    auth_secret: str | None = _option(
        "",
        _optional_str,
        "comma-separated secrets: only access tokens they signed open inboxes (the first signs)",
        secret=True,
    )
    auth_secret_file: str | None = _option("", _optional_str, "file holding -auth-secret's value")
    stun_urls: tuple[str, ...] = _option("", _url_list("stun", "stuns"), "STUN URLs /ice-servers hands out")
    turn_urls: tuple[str, ...] = _option(
        "", _url_list("turn", "turns"), "TURN URLs /ice-servers hands out, with credentials from -turn-secret"
    )
    turn_secret: str | None = _option(
        "", _optional_str, "the TURN server's shared secret (coturn --static-auth-secret)", secret=True
    )
    turn_secret_file: str | None = _option("", _optional_str, "file holding -turn-secret's value")
    turn_ttl: int = _option("86400", _positive(int), "seconds the TURN credentials from /ice-servers last")

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> Settings:
        """Build from raw strings keyed by flag name (`inbox-capacity`); unknown keys are errors."""
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        parsed: dict[str, Any] = {}
        for name, raw in values.items():
            spec = known.get(name)
            if spec is None:
                raise ConfigError(f"unknown setting {name!r}")
            try:
                parsed[spec.name] = spec.metadata["parse"](raw)
            except ValueError as error:
                raise ConfigError(f"invalid -{name}: {error}") from None
        settings = cls(**parsed)
        settings.check()
        return settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """What `uvicorn inbox_asgi:app` uses: INBOX_<NAME> with dashes as underscores."""
        environ = os.environ if environ is None else environ
        values = {}
        for spec in fields(cls):
            key = ENV_PREFIX + spec.name.upper()
            if key in environ:
                values[spec.name.replace("_", "-")] = environ[key]
        return cls.from_strings(values)

    def to_env(self) -> dict[str, str]:
        """The inverse of from_env, so worker processes rebuild the same Settings."""
        env = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name == "bind":
                text = f"[{value[0]}]:{value[1]}" if ":" in value[0] else f"{value[0]}:{value[1]}"
            elif spec.name == "cors":
                text = ",".join(value) if value != ("*",) else "true"
            elif isinstance(value, tuple):
                text = ",".join(value)
            elif value is None:
                text = ""
            else:
                text = str(value).lower() if isinstance(value, bool) else str(value)
            env[ENV_PREFIX + spec.name.upper()] = text
        return env

    def check(self) -> None:
        """Rules that involve more than one setting."""
        if self.workers > 1 and not self.redis_url:
            raise ConfigError(
                "-workers above 1 needs -redis-url: each worker would hold its own inboxes "
                "and peers on different workers could not reach each other"
            )
        if self.max_header_size < 1024:
            raise ConfigError("-max-header-size must be at least 1024 bytes")
        self.auth_secrets()
        turn_secrets = self.turn_secrets()
        if self.turn_urls and not turn_secrets:
            raise ConfigError("-turn-urls needs -turn-secret (or -turn-secret-file) to sign credentials")
        if turn_secrets and not self.turn_urls:
            raise ConfigError("-turn-secret without -turn-urls: there is no TURN server to hand out")

    def auth_secrets(self) -> tuple[str, ...]:
        """-auth-secret's secrets (from the flag or the file); empty: access tokens are off."""
        return read_secrets(self.auth_secret, self.auth_secret_file, "auth-secret")

    def turn_secrets(self) -> tuple[str, ...]:
        """-turn-secret's value; TURN credentials are signed with the first."""
        return read_secrets(self.turn_secret, self.turn_secret_file, "turn-secret")

    @property
    def host(self) -> str:
        return self.bind[0]

    @property
    def port(self) -> int:
        return self.bind[1]

    @property
    def long_poll_wait(self) -> float:
        """How long a GET may wait for a message; 0 when long polling is off."""
        return self.long_polling_timeout if self.long_polling else 0.0


def describe(settings: Settings) -> list[tuple[str, str]]:
    """Flag name and effective value, for the start-up log (passwords in URLs and secrets hidden)."""
    env = settings.to_env()
    described = []
    for spec in fields(settings):
        text = env[ENV_PREFIX + spec.name.upper()]
        if spec.metadata["secret"] and text:
            text = "(set)"
        described.append((spec.name.replace("_", "-"), redact(text) or "-"))
    return described


def redact(value: str) -> str:
    """`redis://user:secret@host` → `redis://user:***@host`; anything else unchanged."""
    scheme, sep, rest = value.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return value
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def option_specs() -> list[tuple[str, str, str, bool]]:
    """(flag name, default text, help, is boolean) for the CLI and README."""
    return [
        (
            spec.name.replace("_", "-"),
            spec.metadata["raw_default"],
            spec.metadata["help"],
            spec.metadata["is_bool"],
        )
        for spec in fields(Settings)
    ]


"""Every setting of the server, its default and its check, in one place.

The command line (``options.Options``), the TOML file given with
``--config`` and the tests all build a :class:`Settings`; a bad value raises
:class:`SettingsError` with a message fit for a usage error. No Twisted here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from faf_replay.accept.client_address import TrustedProxies, TrustedProxiesError


class SettingsError(ValueError):
    pass


#: The spool's folder inside the vault unless ``spool`` says otherwise. Not a
#: number, so it never meets the vault's ``<a>/<b>/<c>/<d>`` folders.
DEFAULT_SPOOL_NAME = ".faf-replay-spool"

#: twisted.logger's level names, least important first.
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


# -- checks: each takes the setting's name and value, returns the value to keep --------


def _seconds(name: str, value: float) -> float:
    return _duration(name, value, allow_zero=False)


def _seconds_or_zero(name: str, value: float) -> float:
    return _duration(name, value, allow_zero=True)


def _duration(name: str, value: float, *, allow_zero: bool) -> float:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise SettingsError(f"{name} must be a number of seconds, {bound}; got {value!r}")
    return value


def _at_least(low: int) -> Callable[[str, int], int]:
    def check(name: str, value: int) -> int:
        if value < low:
            bound = "0 or more" if low == 0 else f"at least {low}"
            raise SettingsError(f"{name} must be {bound}, not {value}")
        return value

    return check


def _between(low: int, high: int) -> Callable[[str, int], int]:
    def check(name: str, value: int) -> int:
        if not low <= value <= high:
            raise SettingsError(f"{name} must be between {low} and {high}, not {value}")
        return value

    return check


def _one_of(*choices: str) -> Callable[[str, str], str]:
    def check(name: str, value: str) -> str:
        if value not in choices:
            allowed = " or ".join(choices) if len(choices) == 2 else "one of " + ", ".join(choices)
            raise SettingsError(f"{name} must be {allowed}, not {value!r}")
        return value

    return check


def _endpoint(name: str, value: str | None) -> str | None:
    """An optional endpoint: ``off`` (or empty, or ``none``) turns it off. Its
    description is parsed where Twisted is at hand (``options.py``)."""
    return None if value in ("", "off", "none") else value


def _directory(name: str, value: str) -> str:
    if not value:
        raise SettingsError(f"{name} must be a directory")
    return value


def _proxies(name: str, value: str) -> str:
    try:
        TrustedProxies.parse(value)
    except TrustedProxiesError as error:
        raise SettingsError(str(error)) from None
    return value


def _setting(
    default: Any,
    help: str,
    check: Callable[[str, Any], Any] | None = None,
    *,
    shown: str | None = None,
    endpoint: bool = False,
) -> Any:
    """One setting: its default, one line of help (the command line's, the
    README's and the example file's), the check of its value, how its default
    is shown when not as itself, and whether it is a strports endpoint."""
    return dataclasses.field(
        default=default, metadata={"help": help, "check": check, "shown": shown, "endpoint": endpoint}
    )


@dataclass(frozen=True)
class Settings:
    """Every setting, declared once: name, type, default, help and check.

    The command line, the environment, the TOML file and the Rust server's
    YAML (``options.py``, ``rust_config.py``) all build one of these; the
    README's table of options is checked against :func:`markdown_table`.
    """

    port: str | None = _setting(
        "tcp:15000",
        "strports endpoint for game clients (off: none, when `--ws-port` is set)",
        _endpoint,
        endpoint=True,
    )
    ws_port: str | None = _setting(
        None, "strports endpoint for game clients over WebSocket (off: none)", _endpoint, endpoint=True
    )
    ws_handshake_timeout: float = _setting(
        10.0, "seconds a WebSocket client has for its opening handshake", _seconds
    )
    ws_hmac_secret_file: str | None = _setting(
        None, "a file with the secret of signed WebSocket URLs (none: not checked)"
    )
    ws_hmac_lifetime: float = _setting(3600.0, "seconds a signed WebSocket URL stays valid", _seconds)
    ws_ping_interval: float = _setting(
        30.0, "seconds a WebSocket may stay silent before it is pinged (0: no pings)", _seconds_or_zero
    )
    ws_ping_timeout: float = _setting(
        30.0, "seconds a pinged WebSocket has to answer before it is closed as vanished", _seconds
    )
    http_port: str | None = _setting(
        "tcp:8011",
        "strports endpoint for /metrics, /health and the live-games API (off: none)",
        _endpoint,
        endpoint=True,
    )
    vault: str = _setting("replays", "directory saved replays go to", _directory)
    delay: float = _setting(300.0, "seconds watchers stay behind the game", _seconds_or_zero)
    sample_interval: float = _setting(1.0, "seconds between samples of the streams", _seconds)
    grace: float = _setting(
        30.0, "seconds without uploaders before a game's write phase ends", _seconds_or_zero
    )
    forced_end: float = _setting(18000.0, "seconds after a replay's creation when it is ended", _seconds)
    header_timeout: float = _setting(
        21600.0, "seconds a connection has to send its `P/` or `G/` header", _seconds
    )
    quorum: int = _setting(2, "uploaders that must agree before bytes are merged", _at_least(1))
    zstd_level: int = _setting(10, "zstd level of saved replays (1-22)", _between(1, 22))
    stall_timeout: float = _setting(
        60.0, "seconds the merge waits for one uploader before it stops counting it as a voter", _seconds
    )
    linger: float = _setting(
        1.0, "seconds a watcher's connection stays open after its last byte", _seconds_or_zero
    )
    keepalive_idle: float = _setting(
        60.0,
        "seconds of silence before TCP keepalive probes a connection (0: no keepalive)",
        _seconds_or_zero,
    )
    keepalive_interval: float = _setting(10.0, "seconds between TCP keepalive probes", _seconds)
    keepalive_count: int = _setting(
        6, "unanswered keepalive probes before the kernel closes a connection", _at_least(1)
    )
    silent_upload_timeout: float = _setting(
        300.0,
        "seconds the last upload of a game may stay silent after every other left before the game "
        "ends without it (0: never)",
        _seconds_or_zero,
    )
    watcher_stall_timeout: float = _setting(
        120.0,
        "seconds a watcher's socket may stay full without it acknowledging a byte before it is "
        "closed (0: never)",
        _seconds_or_zero,
    )
    drain_timeout: float = _setting(
        3600.0, "seconds a saved game waits for slow watchers before closing them", _seconds
    )
    vault_watch_age: float = _setting(
        86400.0,
        "seconds after its save a game can still be watched, from the vault (0: only while live)",
        _seconds_or_zero,
    )
    replay_header_timeout: float = _setting(
        300.0, "seconds from `P/…\\0` to a complete replay header", _seconds
    )
    max_upload_bytes: int = _setting(256 * 1024 * 1024, "bytes one upload may send", _at_least(1))
    max_uploads_per_game: int = _setting(64, "uploads one game accepts in its life", _at_least(1))
    max_watchers_per_game: int = _setting(1000, "watchers of one game at once", _at_least(1))
    max_connections_per_address: int = _setting(256, "open connections from one address", _at_least(1))
    max_connections: int = _setting(30000, "open connections in all", _at_least(1))
    trusted_proxies: str = _setting(
        "private,cloudflare",
        "proxies whose PROXY header, `X-Forwarded-For` or `CF-Connecting-IP` names the client "
        "(addresses, networks, `private`, `cloudflare`, `none`); their own addresses have no "
        "per-address limit",
        _proxies,
    )
    cloudflare_ranges_file: str | None = _setting(
        None,
        "a file of Cloudflare's address ranges, one per line, instead of the list shipped with the package",
    )
    spool: str | None = _setting(
        None,
        "where uploads are kept until their replay is saved",
        shown="`.faf-replay-spool` in the vault",
    )
    spool_sync: float = _setting(5.0, "seconds between writes and fsyncs of the spool", _seconds)
    spool_open_files: int = _setting(
        0,
        "spooled uploads with an open file at once; 0: a quarter of the open-file limit",
        _at_least(0),
    )
    db: str | None = _setting(
        None, "FAF's database, mysql://USER@HOST:PORT/NAME (password from $FAF_REPLAY_DB_PASSWORD)"
    )
    db_password_file: str | None = _setting(None, "a file holding the database password")
    db_pool_size: int = _setting(3, "connections to the database at most", _at_least(1))
    db_timeout: float = _setting(
        10.0, "seconds a save waits for the database before saving with the replay's own facts", _seconds
    )
    db_check_interval: float = _setting(
        30.0, "seconds between checks that the database is reachable", _seconds
    )
    require_known_game: bool = _setting(
        False, "refuse uploads for games the database does not know or that ended long ago"
    )
    known_game_window: float = _setting(
        3600.0, "with --require-known-game: seconds after a game's end when uploads are refused", _seconds
    )
    sentry_dsn: str | None = _setting(
        None, "report unexpected errors to this Sentry DSN (needs the sentry-sdk package)"
    )
    log_format: str = _setting("text", "text or json", _one_of("text", "json"))
    log_level: str = _setting(
        "info", "the least important lines logged: debug, info, warn, error or critical", _one_of(*LOG_LEVELS)
    )

    def __post_init__(self) -> None:
        for field in fields(self):
            check = field.metadata.get("check")
            if check is not None:
                object.__setattr__(self, field.name, check(field.name, getattr(self, field.name)))
        # What no one setting can say alone.
        if self.port is None and self.ws_port is None:
            raise SettingsError(
                "port must be a strports endpoint such as tcp:15000 (off only beside ws_port)"
            )
        if self.require_known_game and not self.db:
            raise SettingsError("require_known_game needs a database (db)")

    @classmethod
    def help(cls, name: str) -> str:
        """The setting's line of help, as the README writes it."""
        return str(cls.__dataclass_fields__[name].metadata["help"])

    @classmethod
    def endpoints(cls) -> list[str]:
        """The settings that are strports endpoints."""
        return [f.name for f in fields(cls) if f.metadata.get("endpoint")]

    @classmethod
    def flags(cls) -> list[str]:
        """The settings that are on or off."""
        return [f.name for f in fields(cls) if f.type == "bool"]

    @property
    def spool_directory(self) -> str:
        return self.spool or os.path.join(os.path.abspath(self.vault), DEFAULT_SPOOL_NAME)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Settings:
        """Build from strings or TOML values, converting each to its field's type."""
        converted: dict[str, Any] = {}
        for field in fields(cls):
            if field.name in values and values[field.name] is not None:
                converted[field.name] = _convert(field.name, field.type, values[field.name])
        unknown = set(values) - set(cls.names())
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**converted)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _convert(name: str, kind: Any, value: Any) -> Any:
    kind = _KINDS[kind]
    expected = _KIND_NAMES[kind]
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{name} must be {expected}, not {value!r}")
    # The command line gives strings for everything; TOML gives typed values.
    if isinstance(value, bool) or (kind is str and not isinstance(value, str)):
        raise SettingsError(f"{name} must be {expected}, not {value!r}")
    if kind is int and isinstance(value, float):
        raise SettingsError(f"{name} must be {expected}, not {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be {expected}, not {value!r}") from None


_KINDS = {"float": float, "int": int, "str": str, "str | None": str, "bool": bool}
_KIND_NAMES = {float: "a number of seconds", int: "a whole number", str: "a string", bool: "true or false"}


def load_toml(path: str) -> dict[str, Any]:
    """The settings in a TOML file; keys use ``_`` or ``-`` like the options."""
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as error:
        raise SettingsError(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"config file {path} is not valid TOML: {error}") from None
    return {key.replace("-", "_"): value for key, value in raw.items()}


def shown_default(name: str) -> str:
    """The default as the README's table shows it."""
    field = Settings.__dataclass_fields__[name]
    if field.metadata.get("shown"):
        return str(field.metadata["shown"])
    default = field.default
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


def markdown_table() -> str:
    """The README's table of options, from the declarations."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for field in fields(Settings):
        option = "--" + field.name.replace("_", "-")
        rows.append(f"| `{option}` | {shown_default(field.name)} | {Settings.help(field.name)} |")
    rows.append("| `--config` | none | a TOML file with any of the keys above |")
    return "\n".join(rows)

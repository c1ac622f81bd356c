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
from dataclasses import dataclass, fields
from typing import Any

from faf_replay.client_address import TrustedProxies, TrustedProxiesError


class SettingsError(ValueError):
    pass


#: The spool's folder inside the vault unless ``spool`` says otherwise. Not a
#: number, so it never meets the vault's ``<a>/<b>/<c>/<d>`` folders.
DEFAULT_SPOOL_NAME = ".faf-replay-spool"

#: twisted.logger's level names, least important first.
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


@dataclass(frozen=True)
class Settings:
    #: strports endpoint for game clients (TCP); ``off`` only beside a ``ws_port``.
    port: str | None = "tcp:15000"
    #: strports endpoint for game clients over WebSocket; ``off`` (or none) disables it.
    ws_port: str | None = None
    #: Seconds a WebSocket client has for its opening handshake.
    ws_handshake_timeout: float = 10.0
    #: A file with the secret of signed WebSocket URLs; none: URLs are not checked.
    ws_hmac_secret_file: str | None = None
    #: Seconds a signed WebSocket URL stays valid after its timestamp.
    ws_hmac_lifetime: float = 3600.0
    #: Seconds a WebSocket may stay silent before we ping it (0: no pings).
    #: Well under Cloudflare's 100 s idle cut, which would otherwise close an
    #: upload that waits in the lobby for its game to start.
    ws_ping_interval: float = 30.0
    #: Seconds a pinged WebSocket has to answer (a pong, or any byte) before it
    #: is closed as vanished (longer while it still acknowledges what we send).
    ws_ping_timeout: float = 30.0
    #: strports endpoint for metrics, health and the live-games API; ``off`` disables it.
    http_port: str | None = "tcp:8011"
    #: Directory saved replays go to.
    vault: str = "replays"
    #: Seconds watchers stay behind the game.
    delay: float = 300.0
    #: Seconds between samples of the streams (merge, delay, stall accounting).
    sample_interval: float = 1.0
    #: Seconds without uploaders before a game's write phase ends.
    grace: float = 30.0
    #: Seconds after a game's creation when it is ended whatever happens.
    forced_end: float = 18000.0
    #: Seconds a connection has to send its ``P/…\0``/``G/…\0`` header.
    header_timeout: float = 21600.0
    #: Uploaders that must agree before bytes are merged.
    quorum: int = 2
    #: zstd compression level of saved replays.
    zstd_level: int = 10
    #: Seconds the merge waits for one uploader (silent, or too slow to catch
    #: up) before it stops counting it as a voter.
    stall_timeout: float = 60.0
    #: Seconds a watcher's connection stays open after its last byte.
    linger: float = 1.0
    #: TCP keepalive on every accepted connection: seconds of silence before the
    #: first probe (0: off), seconds between probes, unanswered probes before
    #: the kernel closes the connection. A peer that vanished (power, Wi-Fi, a
    #: NAT box that forgot it: no FIN, no RST) is found after idle +
    #: interval x count seconds, also while we wait for it to acknowledge data.
    keepalive_idle: float = 60.0
    keepalive_interval: float = 10.0
    keepalive_count: int = 6
    #: Seconds the last connected upload of a game may stay silent, once every
    #: other upload of the game has left, before it stops holding the game's
    #: write phase open (0: never).
    silent_upload_timeout: float = 300.0
    #: Seconds a watcher's socket may stay full without the watcher
    #: acknowledging a byte before it is closed (0: never).
    watcher_stall_timeout: float = 120.0
    #: Seconds a finished game waits for its slowest watchers before closing them.
    drain_timeout: float = 3600.0
    #: Seconds from ``P/…\0`` to a complete replay header.
    replay_header_timeout: float = 300.0
    #: Bytes one upload may send; a longer stream is cut there.
    max_upload_bytes: int = 256 * 1024 * 1024
    #: Uploads (connections) one game accepts in its life.
    max_uploads_per_game: int = 64
    #: Watchers of one game at once.
    max_watchers_per_game: int = 1000
    #: Open connections at once, from one address and in all.
    max_connections_per_address: int = 256
    max_connections: int = 30000
    #: Proxies whose word on the client's address we take (a PROXY header,
    #: X-Forwarded-For, Cloudflare's CF-Connecting-IP): addresses and networks,
    #: ``private``, ``cloudflare`` or ``none``. Their own addresses have no
    #: per-address limit: they speak for many clients. The default fits FAF's
    #: path: Cloudflare, then Traefik in the cluster, then us.
    trusted_proxies: str = "private,cloudflare"
    #: A file of Cloudflare's address ranges, one per line, to use for
    #: ``cloudflare`` instead of the list shipped with the package.
    cloudflare_ranges_file: str | None = None
    #: Where uploads are kept until their replay is saved; default:
    #: ``.faf-replay-spool`` inside the vault, so that where only the vault is a
    #: volume (FAF's containers) a restart finds the running games again.
    spool: str | None = None
    #: Seconds between writes and fsyncs of the spool (what a crash can take).
    spool_sync: float = 5.0
    #: Spooled uploads holding an open file at once (the least recently used
    #: give theirs up); 0: a quarter of the open-file limit.
    spool_open_files: int = 0
    #: FAF's database as ``mysql://USER@HOST:PORT/NAME``; none: run standalone.
    db: str | None = None
    #: A file holding the database password (else ``FAF_REPLAY_DB_PASSWORD``).
    db_password_file: str | None = None
    #: Connections to the database at most.
    db_pool_size: int = 3
    #: Seconds a save waits for the database's record of the game before it
    #: saves with the replay's own facts (and completes them later).
    db_timeout: float = 10.0
    #: Seconds between checks that the database is reachable.
    db_check_interval: float = 30.0
    #: Refuse uploads for games the database does not know, or that ended
    #: more than ``known_game_window`` seconds ago.
    require_known_game: bool = False
    known_game_window: float = 3600.0
    #: Report unexpected errors to Sentry (needs the ``sentry-sdk`` package).
    sentry_dsn: str | None = None
    #: ``text`` or ``json`` (one JSON object per line).
    log_format: str = "text"
    #: The least important lines logged: ``debug``, ``info``, ``warn``, ``error``, ``critical``.
    log_level: str = "info"

    def __post_init__(self) -> None:
        for name in ("port", "ws_port", "http_port"):
            if getattr(self, name) in ("", "off", "none"):
                object.__setattr__(self, name, None)
        for name in (
            "delay",
            "grace",
            "linger",
            "keepalive_idle",
            "ws_ping_interval",
            "silent_upload_timeout",
            "watcher_stall_timeout",
        ):
            _check_duration(name, getattr(self, name), allow_zero=True)
        for name in (
            "sample_interval",
            "forced_end",
            "header_timeout",
            "stall_timeout",
            "drain_timeout",
            "known_game_window",
            "spool_sync",
            "db_timeout",
            "db_check_interval",
            "replay_header_timeout",
            "ws_handshake_timeout",
            "ws_hmac_lifetime",
            "ws_ping_timeout",
            "keepalive_interval",
        ):
            _check_duration(name, getattr(self, name), allow_zero=False)
        if self.quorum < 1:
            raise SettingsError(f"quorum must be at least 1, not {self.quorum}")
        for name in (
            "max_upload_bytes",
            "max_uploads_per_game",
            "max_watchers_per_game",
            "max_connections_per_address",
            "max_connections",
            "db_pool_size",
            "keepalive_count",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.spool_open_files < 0:
            raise SettingsError(f"spool_open_files must be 0 or more, not {self.spool_open_files}")
        if not 1 <= self.zstd_level <= 22:
            raise SettingsError(f"zstd_level must be between 1 and 22, not {self.zstd_level}")
        if self.port is None and self.ws_port is None:
            raise SettingsError(
                "port must be a strports endpoint such as tcp:15000 (off only beside ws_port)"
            )
        if not self.vault:
            raise SettingsError("vault must be a directory")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"log_format must be text or json, not {self.log_format!r}")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        try:
            TrustedProxies.parse(self.trusted_proxies)
        except TrustedProxiesError as error:
            raise SettingsError(str(error)) from None
        if self.require_known_game and not self.db:
            raise SettingsError("require_known_game needs a database (db)")

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


def _check_duration(name: str, value: float, *, allow_zero: bool) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise SettingsError(f"{name} must be a number of seconds, {bound}; got {value!r}")


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

"""The command line of ``twistd faf-replay``: options, environment, TOML file.

Every setting of :class:`~faf_replay.settings.Settings` is an option
(``--max-connections``), an environment variable (``FAF_REPLAY_MAX_CONNECTIONS``)
and a key of the ``--config`` TOML file (``max_connections``); the command line
wins over the environment, which wins over the file, which wins over the Rust
server's YAML file named by ``RS_CONFIG_FILE`` (``rust_config.py``), which wins
over the default. Bad values are usage errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from faf_replay import rust_config
from faf_replay.client_address import (
    CLOUDFLARE,
    Network,
    TrustedProxies,
    TrustedProxiesError,
    read_ranges,
)
from faf_replay.database_config import DatabaseConfig, DatabaseConfigError
from faf_replay.settings import Settings, SettingsError, load_toml

ENVIRONMENT_PREFIX = "FAF_REPLAY_"
_DEFAULTS = Settings()

#: One line of help per setting; also the reference in docs/configuration.md.
HELP = {
    "port": "strports endpoint for game clients (off: none, when ws_port is set)",
    "ws_port": "strports endpoint for game clients over WebSocket (off: none)",
    "ws_handshake_timeout": "seconds a WebSocket client has for its opening handshake",
    "ws_hmac_secret_file": "a file with the secret of signed WebSocket URLs (none: not checked)",
    "ws_hmac_lifetime": "seconds a signed WebSocket URL stays valid",
    "ws_ping_interval": "seconds a WebSocket may stay silent before it is pinged (0: no pings)",
    "ws_ping_timeout": "seconds a pinged WebSocket has to answer before it is closed as vanished",
    "http_port": "strports endpoint for /metrics, /health and the live-games API (off: none)",
    "vault": "directory saved replays go to",
    "delay": "seconds watchers stay behind the game",
    "sample_interval": "seconds between samples of the streams",
    "grace": "seconds without uploaders before a game's write phase ends",
    "forced_end": "seconds after a replay's creation when it is ended",
    "header_timeout": "seconds a connection has to send its P/ or G/ header",
    "quorum": "uploaders that must agree before bytes are merged",
    "zstd_level": "zstd level of saved replays (1-22)",
    "stall_timeout": "seconds the merge waits for one uploader before it stops counting it as a voter",
    "linger": "seconds a watcher's connection stays open after its last byte",
    "keepalive_idle": "seconds of silence before TCP keepalive probes a connection (0: no keepalive)",
    "keepalive_interval": "seconds between TCP keepalive probes",
    "keepalive_count": "unanswered keepalive probes before the kernel closes a connection",
    "silent_upload_timeout": "seconds the last upload of a game may stay silent after every other "
    "left before the game ends without it (0: never)",
    "watcher_stall_timeout": "seconds a watcher's socket may stay full without it acknowledging "
    "a byte before it is closed (0: never)",
    "drain_timeout": "seconds a saved game waits for slow watchers before closing them",
    "replay_header_timeout": "seconds from P/…\\0 to a complete replay header",
    "max_upload_bytes": "bytes one upload may send",
    "max_uploads_per_game": "uploads one game accepts in its life",
    "max_watchers_per_game": "watchers of one game at once",
    "max_connections_per_address": "open connections from one address",
    "max_connections": "open connections in all",
    "trusted_proxies": "proxies whose PROXY header, X-Forwarded-For or CF-Connecting-IP names the "
    "client (addresses, networks, private, cloudflare or none); their own addresses have no "
    "per-address limit",
    "cloudflare_ranges_file": "a file of Cloudflare's address ranges, one per line, instead of the "
    "list shipped with the package",
    "spool": "where uploads are kept until their replay is saved [default: .faf-replay-spool in the vault]",
    "spool_sync": "seconds between writes and fsyncs of the spool",
    "spool_open_files": "spooled uploads with an open file at once (0: a quarter of the open-file limit)",
    "db": "FAF's database, mysql://USER@HOST:PORT/NAME (password from $FAF_REPLAY_DB_PASSWORD)",
    "db_password_file": "a file holding the database password",
    "db_pool_size": "connections to the database at most",
    "db_timeout": "seconds a save waits for the database before saving with the replay's own facts",
    "db_check_interval": "seconds between checks that the database is reachable",
    "require_known_game": "refuse uploads for games the database does not know or that ended long ago",
    "known_game_window": "with --require-known-game: seconds after a game's end when uploads are refused",
    "sentry_dsn": "report unexpected errors to this Sentry DSN (needs the sentry-sdk package)",
    "log_format": "text or json",
    "log_level": "the least important lines logged: debug, info, warn, error or critical",
}
FLAGS = [name for name in Settings.names() if isinstance(getattr(_DEFAULTS, name), bool)]
#: Settings that name endpoints; each must parse as a strports description.
ENDPOINTS = ("port", "ws_port", "http_port")


def option_name(name: str) -> str:
    return name.replace("_", "-")


def environment_name(name: str) -> str:
    return ENVIRONMENT_PREFIX + name.upper()


def _help(name: str) -> str:
    default = getattr(_DEFAULTS, name)
    if default is None or "[default" in HELP[name]:
        return HELP[name]
    return f"{HELP[name]} [default: {default}]"


def from_environment(environment: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as ``FAF_REPLAY_<NAME>`` variables."""
    values: dict[str, Any] = {}
    for name in Settings.names():
        raw = environment.get(environment_name(name))
        if raw is None:
            continue
        if name in FLAGS:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                values[name] = True
            elif lowered in ("0", "false", "no", "off", ""):
                values[name] = False
            else:
                raise SettingsError(f"{environment_name(name)} must be true or false, not {raw!r}")
        else:
            values[name] = raw
    return values


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "The live replay server of Forged Alliance Forever. Every option is also an environment "
        "variable FAF_REPLAY_<OPTION> (FAF_REPLAY_MAX_CONNECTIONS) and a key of the --config file."
    )
    optParameters = [
        [option_name(name), None, None, _help(name)] for name in Settings.names() if name not in FLAGS
    ] + [["config", "c", None, "a TOML file with the same keys (the environment and command line win)"]]
    optFlags = [[option_name(name), None, HELP[name]] for name in FLAGS]

    database: DatabaseConfig | None = None
    hmac_secret: bytes | None = None
    #: Whose word on a client's address is taken (``trusted_proxies``).
    trusted: TrustedProxies
    #: The Rust server's configuration, when RS_CONFIG_FILE names one.
    rust: rust_config.RustConfig | None = None

    def postOptions(self) -> None:
        try:
            values: dict[str, Any] = {}
            self.rust = rust_config.from_environment(os.environ)
            if self.rust is not None:
                values.update(self.rust.values)
            if self["config"]:
                values.update(load_toml(self["config"]))
            values.update(from_environment(os.environ))
            for name in Settings.names():
                given = self[option_name(name)]
                if name in FLAGS:
                    if given:
                        values[name] = True
                elif given is not None:
                    values[name] = given
            self.settings = Settings.from_values(values)
        except SettingsError as error:
            raise usage.UsageError(str(error)) from None
        for name in ENDPOINTS:
            description = getattr(self.settings, name)
            if description is None:
                continue
            try:
                # Parsing only: no reactor is touched and nothing listens yet.
                serverFromString(None, description)
            except (ValueError, TypeError) as error:
                raise usage.UsageError(
                    f"{name} {description!r} is not an endpoint description: {error}"
                ) from None
        if self.settings.db:
            try:
                self.database = DatabaseConfig.from_settings(
                    self.settings.db,
                    self.settings.db_password_file,
                    os.environ,
                    default_password=self.rust.password if self.rust is not None else None,
                )
            except DatabaseConfigError as error:
                raise usage.UsageError(str(error)) from None
        if self.settings.ws_hmac_secret_file:
            self.hmac_secret = _read_secret(self.settings.ws_hmac_secret_file)
        cloudflare = CLOUDFLARE
        if self.settings.cloudflare_ranges_file:
            cloudflare = _read_ranges(self.settings.cloudflare_ranges_file)
        self.trusted = TrustedProxies.parse(self.settings.trusted_proxies, cloudflare)


def _read_ranges(path: str) -> tuple[Network, ...]:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        why = getattr(error, "strerror", None) or str(error)
        raise usage.UsageError(f"cannot read cloudflare_ranges_file {path}: {why}") from None
    try:
        return read_ranges(text, f"cloudflare_ranges_file {path}")
    except TrustedProxiesError as error:
        raise usage.UsageError(str(error)) from None


def _read_secret(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            secret = file.read().rstrip(b"\r\n")
    except OSError as error:
        raise usage.UsageError(f"cannot read ws_hmac_secret_file {path}: {error.strerror}") from None
    if not secret:
        raise usage.UsageError(f"ws_hmac_secret_file {path} is empty")
    return secret

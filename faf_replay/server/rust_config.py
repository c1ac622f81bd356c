"""FAF's production configuration, read the way the Rust replay server reads it.

FAF runs its live replay server in a container with no command line: a YAML
file named by ``RS_CONFIG_FILE`` holds the settings, ``RS_DB_PASSWORD`` the
database password and ``RUST_LOG`` the log level. This module turns those into
values of :class:`~faf_replay.settings.Settings`, so that our image replaces
the Rust one with nothing else changed. It is an adapter at the edge: the
lowest layer of the configuration, under our TOML file, the ``FAF_REPLAY_*``
variables and the command line, and nothing else knows it exists. No Twisted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import yaml

from faf_replay.settings import Settings, SettingsError

CONFIG_VARIABLE = "RS_CONFIG_FILE"
PASSWORD_VARIABLE = "RS_DB_PASSWORD"
LOG_VARIABLE = "RUST_LOG"


@dataclass(frozen=True)
class RustConfig:
    #: Values by setting name, as ``Settings.from_values`` takes them.
    values: dict[str, Any]
    #: The database password (``RS_DB_PASSWORD``), when given.
    password: str | None = field(default=None, repr=False)
    #: What the server should log about how it read the file.
    notes: list[str] = field(default_factory=list)


def _port_number(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise SettingsError(f"{where} must be a port number (1-65535), not {value!r}")
    return value


def _port(where: str, value: Any) -> str:
    """A port to listen on, on every address, as the Rust server does."""
    return f"tcp:{_port_number(where, value)}"


def _seconds(where: str, value: Any) -> float:
    # The Rust server takes any positive number of seconds, fractions included.
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SettingsError(f"{where} must be a number of seconds, more than zero; got {value!r}")
    return float(value)


def _count(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"{where} must be a whole number, 1 or more; got {value!r}")
    return value


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{where} must be a non-empty string, not {value!r}")
    return value


#: Every key of the Rust server's file: the setting it becomes (None: it has no
#: meaning here) and the check of its value. The ``database`` keys make ``db``.
_KEYS: dict[str, dict[str, tuple[str | None, Callable[[str, Any], Any]]]] = {
    "server": {
        "port": ("port", _port),
        "websocket_port": ("ws_port", _port),
        "prometheus_port": ("http_port", _port),
        "worker_threads": (None, _count),
        "connection_accept_timeout_s": ("header_timeout", _seconds),
    },
    "database": {
        "pool_size": ("db_pool_size", _count),
        "host": (None, _text),
        "port": (None, _port_number),
        "user": (None, _text),
        "name": (None, _text),
        "password": (None, _text),
    },
    "storage": {
        "vault_path": ("vault", _text),
        "compression_level": ("zstd_level", _count),
    },
    "replay": {
        "forced_timeout_s": ("forced_end", _seconds),
        "time_with_zero_writers_to_end_replay_s": ("grace", _seconds),
        "delay_s": ("delay", _seconds),
        "update_interval_s": ("sample_interval", _seconds),
        "merge_quorum_size": ("quorum", _count),
        "stream_comparison_distance_b": (None, _count),
    },
}

_WITHOUT_MEANING = {
    "server.worker_threads": "one event loop serves every connection; compression runs in worker threads",
    "replay.stream_comparison_distance_b": "the quorum merge compares whole streams, not a window",
}

#: RUST_LOG's levels as ours; ``off`` keeps only critical lines.
_LOG_LEVELS = {
    "off": "critical",
    "error": "error",
    "warn": "warn",
    "info": "info",
    "debug": "debug",
    "trace": "debug",
}


def from_environment(environment: Mapping[str, str]) -> RustConfig | None:
    """The Rust server's configuration, when ``RS_CONFIG_FILE`` names one."""
    path = environment.get(CONFIG_VARIABLE)
    if path is None:
        return None
    if not path:
        raise SettingsError(f"{CONFIG_VARIABLE} is set but empty")
    config = load(path)
    values = dict(config.values)
    notes = [f"configuration from {CONFIG_VARIABLE}={path} (the Rust replay server's format)", *config.notes]
    if LOG_VARIABLE in environment:
        values["log_level"] = log_level(environment[LOG_VARIABLE])
    password = environment.get(PASSWORD_VARIABLE, config.password)
    return RustConfig(values, password, notes)


def load(path: str) -> RustConfig:
    """Read and check one YAML file; every problem is a :class:`SettingsError`."""
    try:
        with open(path, encoding="utf-8") as file:
            document = yaml.safe_load(file)
    except OSError as error:
        raise SettingsError(f"cannot read {CONFIG_VARIABLE} file {path}: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise SettingsError(f"{CONFIG_VARIABLE} file {path} is not valid YAML: {error}") from None
    try:
        return parse(document)
    except SettingsError as error:
        raise SettingsError(f"{CONFIG_VARIABLE} file {path}: {error}") from None


def parse(document: Any) -> RustConfig:
    """The settings a parsed YAML document gives (sections may be left out:
    our defaults apply to what they would have said)."""
    sections = _mapping("the file", {} if document is None else document)
    unknown = sorted(set(sections) - set(_KEYS))
    if unknown:
        raise SettingsError(f"unknown section(s): {', '.join(map(str, unknown))}")
    values: dict[str, Any] = {}
    given: dict[str, Any] = {}
    notes = []
    for section, raw in sections.items():
        keys = _KEYS[section]
        entries = _mapping(section, raw)
        unknown = sorted(set(entries) - set(keys))
        if unknown:
            raise SettingsError(f"unknown key(s): {', '.join(f'{section}.{key}' for key in unknown)}")
        for key, value in entries.items():
            where = f"{section}.{key}"
            setting, check = keys[key]
            checked = check(where, value)
            given[where] = checked
            if setting is not None:
                values[setting] = checked
            elif where in _WITHOUT_MEANING:
                notes.append(f"{where} = {value!r} has no meaning for faf-replay: {_WITHOUT_MEANING[where]}")
    if "server" in sections:
        # As in the Rust server, a port left out of the server section is not listened on.
        if "server.port" not in given and "server.websocket_port" not in given:
            raise SettingsError("server needs port, websocket_port or both")
        values.setdefault("port", "off")
        values.setdefault("ws_port", "off")
    if "database" in sections:
        values["db"] = _database_url(given)
    _check_as_settings(values, sections)
    return RustConfig(values, given.get("database.password"), notes)


def _check_as_settings(values: dict[str, Any], sections: dict[str, Any]) -> None:
    """What our settings refuse (a zstd level of 30), named as the file names it."""
    try:
        Settings.from_values(values)
    except SettingsError as error:
        message = str(error)
        for section, keys in _KEYS.items():
            for key, (setting, _) in keys.items():
                if setting is not None and message.startswith(setting) and key in sections.get(section, {}):
                    message = f"{section}.{key} ({message})"
        raise SettingsError(message) from None


def log_level(value: str) -> str:
    """Our level for a ``RUST_LOG`` value: a level (``info``), or env_logger's
    directives (``warn,faf_rust_replayserver=debug``), where a directive for the
    server's own module wins over the global level. Naming neither means
    errors only, as env_logger has it."""
    chosen = None
    for directive in value.replace(" ", "").lower().split(","):
        target, _, level = directive.split("/", 1)[0].rpartition("=")
        if not level:
            continue
        if level not in _LOG_LEVELS:
            levels = ", ".join(_LOG_LEVELS)
            raise SettingsError(f"{LOG_VARIABLE} must be one of {levels}, not {value!r}")
        if target.startswith("faf_rust_replayserver") or (not target and chosen is None):
            chosen = _LOG_LEVELS[level]
    return chosen or "error"


def _mapping(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SettingsError(f"{where} must be a mapping of keys to values, not {value!r}")
    return value


def _database_url(given: dict[str, Any]) -> str:
    missing = [key for key in ("host", "user", "name") if f"database.{key}" not in given]
    if missing:
        raise SettingsError(f"database needs {', '.join(missing)}")
    host = given["database.host"]
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    user = quote(given["database.user"], safe="")
    name = quote(given["database.name"], safe="")
    return f"mysql://{user}@{host}:{given.get('database.port', 3306)}/{name}"

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

from faf_replay.accept.client_address import (
    CLOUDFLARE,
    Network,
    TrustedProxies,
    TrustedProxiesError,
    read_ranges,
)
from faf_replay.database.config import DatabaseConfig, DatabaseConfigError
from faf_replay.server import rust_config
from faf_replay.settings import Settings, SettingsError, load_toml, shown_default

ENVIRONMENT_PREFIX = "FAF_REPLAY_"
_DEFAULTS = Settings()

FLAGS = Settings.flags()
#: Settings that name endpoints; each must parse as a strports description.
ENDPOINTS = Settings.endpoints()


def option_name(name: str) -> str:
    return name.replace("_", "-")


def environment_name(name: str) -> str:
    return ENVIRONMENT_PREFIX + name.upper()


def _help(name: str) -> str:
    """The setting's help (``settings.py`` declares it once) for ``--help``."""
    text = Settings.help(name).replace("`", "")
    if getattr(_DEFAULTS, name) is None and not Settings.__dataclass_fields__[name].metadata.get("shown"):
        return text
    return f"{text} [default: {shown_default(name).replace('`', '')}]"


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
    optFlags = [[option_name(name), None, Settings.help(name).replace("`", "")] for name in FLAGS]

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

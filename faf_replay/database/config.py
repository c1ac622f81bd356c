"""Where FAF's database is and how to log in: ``--db`` and its password.

``mysql://USER@HOST:PORT/NAME`` names the server and database. The password
never appears there (command lines are visible to every user of the machine):
it comes from ``FAF_REPLAY_DB_PASSWORD`` or from the file ``db_password_file``.
Pure logic, no Twisted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

PASSWORD_VARIABLE = "FAF_REPLAY_DB_PASSWORD"


class DatabaseConfigError(ValueError):
    pass


@dataclass(frozen=True)
class DatabaseConfig:
    host: str
    port: int
    user: str
    name: str
    password: str = field(default="", repr=False)

    @classmethod
    def parse(cls, url: str, password: str = "") -> DatabaseConfig:
        parts = urlsplit(url)
        if parts.scheme != "mysql":
            raise DatabaseConfigError(f"db must look like mysql://USER@HOST:PORT/NAME, not {url!r}")
        if parts.password is not None:
            raise DatabaseConfigError(
                f"db must not carry a password; use {PASSWORD_VARIABLE} or db_password_file"
            )
        try:
            port = parts.port or 3306
        except ValueError:
            raise DatabaseConfigError(f"db has a bad port: {url!r}") from None
        name = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not parts.username or not name or "/" in name:
            raise DatabaseConfigError(f"db must look like mysql://USER@HOST:PORT/NAME, not {url!r}")
        return cls(parts.hostname, port, unquote(parts.username), name, password)

    @classmethod
    def from_settings(
        cls,
        url: str,
        password_file: str | None,
        environment: Mapping[str, str],
        default_password: str | None = None,
    ) -> DatabaseConfig:
        """The configuration, with the password from the file or the environment,
        else ``default_password`` (the Rust server's ``RS_DB_PASSWORD``)."""
        if password_file:
            try:
                with open(password_file, encoding="utf-8") as file:
                    password = file.read().rstrip("\r\n")
            except OSError as error:
                raise DatabaseConfigError(
                    f"cannot read db_password_file {password_file}: {error.strerror}"
                ) from None
        else:
            password = environment.get(PASSWORD_VARIABLE, default_password or "")
        return cls.parse(url, password)

    def describe(self) -> str:
        """For logs: everything but the password."""
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.name}"

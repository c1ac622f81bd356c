"""A private MariaDB server for the database tests.

Started on first use (``mariadb-install-db`` + ``mariadbd`` on a temporary data
directory, a unix socket and a free 127.0.0.1 port), shared by every test of
the run, stopped when the test process exits. Each test gets its own database
loaded from ``schema.sql``. Where MariaDB is not installed the tests are
skipped, unless ``FAF_REPLAY_REQUIRE_DB=1`` (set by ``.ci/run``): then its
absence is a failure.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.requirements import unavailable

SCHEMA = Path(__file__).parent / "schema.sql"
USER, PASSWORD = "faf_replay", "s3cret-π"
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
_databases = itertools.count(1)


class MariaDBMissing(Exception):
    pass


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name, path=_SEARCH_PATH)
        if found:
            return found
    raise MariaDBMissing(f"none of {', '.join(names)} is installed")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MariaDBServer:
    """One mariadbd process on a throwaway data directory."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="faf-replay-mariadb-"))
        self.socket = str(self.directory / "mysqld.sock")
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        self._daemon = _binary("mariadbd", "mysqld")
        install = _binary("mariadb-install-db", "mysql_install_db")
        self._client = _binary("mariadb", "mysql")
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.directory / 'data'}",
                *user,
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        user = ["--user=root"] if os.geteuid() == 0 else []
        self.process = subprocess.Popen(
            [
                self._daemon,
                "--no-defaults",
                f"--datadir={self.directory / 'data'}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                f"--pid-file={self.directory / 'mysqld.pid'}",
                f"--log-error={self.directory / 'error.log'}",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=8M",
                "--skip-log-bin",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
                *user,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "error.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mariadbd exited with {self.process.returncode}:\n{log}")
            if self.sql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("mariadbd did not start within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def sql(self, statements: str, database: str = "", check: bool = True) -> subprocess.CompletedProcess:
        """Run SQL as root over the unix socket, with the command-line client."""
        return subprocess.run(
            [
                self._client,
                "--no-defaults",
                f"--socket={self.socket}",
                "-uroot",
                "--batch",
                "--default-character-set=utf8mb4",
                *([database] if database else []),
            ],
            input=statements.encode(),
            capture_output=True,
            check=check,
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


_server: MariaDBServer | None = None
_failure: BaseException | None = None


def server() -> MariaDBServer:
    """The shared server, started on first use; skips (or fails in CI) without MariaDB."""
    global _server, _failure
    if _server is None and _failure is None:
        try:
            started = MariaDBServer()
            atexit.register(started.remove)
            started.start()
            started.sql(
                f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
                f"CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}';"
            )
            _server = started
        except (MariaDBMissing, RuntimeError, subprocess.CalledProcessError, OSError) as error:
            _failure = error
    if _server is None:
        unavailable("DB", f"no private MariaDB server: {_failure}", "install mariadb-server, or run .ci/run")
    return _server


def fresh_database(name: str | None = None) -> str:
    """A new database with FAF's tables, for one test; the faf_replay user may use it.
    ``name``: that name (FAF's own, ``faf_lobby``), replacing what a test left."""
    db = server()
    name = name or f"faf_test_{os.getpid()}_{next(_databases)}"
    db.sql(
        f"DROP DATABASE IF EXISTS `{name}`;"
        f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
        f"GRANT ALL ON `{name}`.* TO '{USER}'@'127.0.0.1';"
        f"GRANT ALL ON `{name}`.* TO '{USER}'@'localhost';"
    )
    db.sql(SCHEMA.read_text(), database=name)
    return name


def drop_database(name: str) -> None:
    if _server is not None and _server.process is not None:
        _server.sql(f"DROP DATABASE IF EXISTS `{name}`;", check=False)


def user(name: str, password: str, database: str) -> None:
    """A login of the server's own (as FAF's ``faf-legacy-live-replay-server``) for ``database``."""
    db = server()
    for host in ("127.0.0.1", "localhost"):
        db.sql(
            f"DROP USER IF EXISTS '{name}'@'{host}';"
            f"CREATE USER '{name}'@'{host}' IDENTIFIED BY '{password}';"
            f"GRANT ALL ON `{database}`.* TO '{name}'@'{host}';"
        )

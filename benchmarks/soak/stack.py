"""The soak's world, inside its private network namespace: MariaDB, ``twistd faf-replay``, the
spool's and the vault's filesystems, and nftables on the game ports. Each part can be hurt the
way production hurts it (killed, hung, filled, lossy) and healed.

Blocking calls (a start waits for a process to answer); the run calls the slow ones from a thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from benchmarks.load.paths import ROOT
from benchmarks.load.rows import fill_tables
from tests.support.processes import TWISTD

#: Fixed ports: a restarted server must be where the players look for it.
GAME_PORT, WS_PORT, HTTP_PORT = 15000, 15001, 8011
_TABLE = "faf_replay_soak"


class Database:
    """A MariaDB of the soak's own (``tests.support.mariadb.MariaDBServer``) with FAF's tables,
    the server's login and a row for every planned game; killed, restarted, hung, resumed."""

    def __init__(self, games: list[tuple[int, int]]) -> None:
        import MySQLdb  # noqa: PLC0415

        from tests.support import mariadb  # noqa: PLC0415

        self.server = mariadb.MariaDBServer()
        self.server.start()
        self.name, self.password = "faf_lobby", mariadb.PASSWORD
        self.server.sql(
            f"CREATE DATABASE {self.name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
            + "".join(
                f"CREATE USER '{mariadb.USER}'@'{host}' IDENTIFIED BY '{self.password}';"
                f"GRANT ALL ON {self.name}.* TO '{mariadb.USER}'@'{host}';"
                for host in ("127.0.0.1", "localhost")
            )
        )
        self.server.sql(mariadb.SCHEMA.read_text(), database=self.name)
        self.url = f"mysql://{mariadb.USER}@127.0.0.1:{self.server.port}/{self.name}"
        connection = MySQLdb.connect(
            unix_socket=self.server.socket, user="root", db=self.name, charset="utf8mb4", autocommit=True
        )
        with connection.cursor() as cursor:
            fill_tables(cursor, games)
        connection.close()
        self.hung = False

    @property
    def up(self) -> bool:
        return self.server.process is not None and self.server.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: what an OOM kill or a lost node does to it."""
        if self.server.process is not None:
            self.server.process.kill()
            self.server.process.wait()
            self.server.process = None
        self.hung = False

    def start(self) -> None:
        """Start it again on the same data (InnoDB recovers); returns once it answers."""
        self.server.start()

    def hang(self) -> None:
        """SIGSTOP: it accepts connections (the kernel does) and answers nothing."""
        if self.up:
            os.kill(self.server.process.pid, signal.SIGSTOP)
            self.hung = True

    def resume(self) -> None:
        if self.up and self.hung:
            os.kill(self.server.process.pid, signal.SIGCONT)
        self.hung = False

    def rows(self) -> dict[int, tuple[int, int | None]]:
        """Every game row: (replay_available, replay_ticks)."""
        import MySQLdb  # noqa: PLC0415

        connection = MySQLdb.connect(unix_socket=self.server.socket, user="root", db=self.name)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT id, replay_available, replay_ticks FROM game_stats")
                return {int(i): (int(a or 0), None if t is None else int(t)) for i, a, t in cursor.fetchall()}
        finally:
            connection.close()

    def remove(self) -> None:
        self.resume()
        self.server.remove()


class ReplayServer:
    """``twistd faf-replay`` on fixed ports, on one vault and one spool for all its lives;
    each life logs JSON to ``server-<n>.log``."""

    def __init__(self, workdir: Path, options: list[str], env: dict[str, str]) -> None:
        self.workdir = workdir
        self.options = options
        self.env = env
        self.lives = 0
        self.process: subprocess.Popen | None = None
        self.exit_codes: list[int] = []

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.lives}.log"

    def start(self) -> None:
        self.lives += 1
        command = [
            *TWISTD,
            "-n",
            "--pidfile=",
            "faf-replay",
            f"--port=tcp:{GAME_PORT}:interface=127.0.0.1:backlog=4096",
            f"--ws-port=tcp:{WS_PORT}:interface=127.0.0.1:backlog=4096",
            f"--http-port=tcp:{HTTP_PORT}:interface=127.0.0.1",
            "--log-format=json",
            *self.options,
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env={**self.env, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=log
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def listening(self) -> bool:
        """Whether this life listens on every port; raises if it died starting."""
        if self.process is None:
            return False
        if self.process.poll() is not None:
            raise RuntimeError(f"the server exited with {self.process.returncode} while starting")
        text = self.log_path.read_bytes()
        return all(
            re.search(rf"{name} (\(PROXY\) )?starting on \d+".encode(), text)
            for name in ("ReplayFactory", "WebSocketReplayFactory", "Site")
        )

    def kill(self) -> None:
        """SIGKILL, reaped: nothing of it runs any more."""
        assert self.process is not None
        self.process.kill()
        self.exit_codes.append(self.process.wait())
        self.process = None

    def terminate(self, timeout: float = 600) -> int:
        """SIGTERM (a deploy), and its exit code once it has exited."""
        assert self.process is not None
        self.process.terminate()
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.exit_codes.append(code)
        self.process = None
        return code

    def metrics(self) -> str:
        import urllib.request  # noqa: PLC0415

        with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/metrics", timeout=5) as answer:
            return answer.read().decode()

    def log_lines(self) -> list[tuple[int, dict]]:
        """Every life's JSON log lines, with the life they are from (non-JSON lines as ``text``)."""
        lines = []
        for life in range(1, self.lives + 1):
            path = self.workdir / f"server-{life}.log"
            for line in path.read_bytes().splitlines():
                try:
                    lines.append((life, json.loads(line)))
                except ValueError:
                    lines.append((life, {"text": line.decode(errors="replace")}))
        return lines


class Disk:
    """A small tmpfs of its own (the spool's or the vault's) that can be filled to the last
    byte for a while: every write then fails with ENOSPC, as on a full volume."""

    def __init__(self, path: Path, megabytes: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)], check=True)
        self.ballast = path / ".soak-ballast"

    def fill(self) -> None:
        """Write the ballast until no byte more fits (unbuffered: nothing left to flush after)."""
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 12, 1):
                chunk = b"\0" * size
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, chunk)
        finally:
            os.close(fd)

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)

    @property
    def full(self) -> bool:
        return self.ballast.exists()

    def used(self) -> int:
        """Bytes used on it, less the ballast."""
        stats = os.statvfs(self.path)
        ballast = self.ballast.stat().st_size if self.ballast.exists() else 0
        return (stats.f_blocks - stats.f_bfree) * stats.f_frsize - ballast

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


class Network:
    """nftables in the namespace: a share of the game ports' packets lost at random, and
    connections blackholed (a set of connections whose packets all drop).

    A blackholed connection is keyed by its pair (client port, server port), not by its
    client port alone: the kernel hands the same ephemeral port to a connection to another
    destination port while the first connection still holds it (an upload to :data:`WS_PORT`
    beside one to :data:`GAME_PORT`, or the server's own connection to MariaDB), and a rule on
    the port alone would silently drop that unrelated connection's packets too. Everything
    runs on 127.0.0.1, so the pair names one connection.
    """

    def __init__(self) -> None:
        self.lost = 0  # packets dropped by loss rules since flushed
        self._vanished: set[tuple[int, int]] = set()  # the (client port, server port) pairs in the set now
        ports = f"{{ {GAME_PORT}, {WS_PORT} }}"
        # On loopback every packet passes the input hook once, whichever way it goes: the
        # client's carry (client port, server port) as (sport, dport), the server's as (dport, sport).
        self._nft(
            f"table inet {_TABLE} {{\n"
            "  set vanished { type inet_service . inet_service; }\n"
            "  chain loss { }\n"
            "  chain input {\n"
            "    type filter hook input priority filter; policy accept;\n"
            '    tcp sport . tcp dport @vanished counter drop comment "vanished"\n'
            '    tcp dport . tcp sport @vanished counter drop comment "vanished back"\n'
            f"    tcp dport {ports} jump loss\n"
            f"    tcp sport {ports} jump loss\n"
            "  }\n"
            "}\n"
        )

    @staticmethod
    def _nft(script: str) -> None:
        subprocess.run(["nft", "-f", "-"], input=script.encode(), check=True, capture_output=True)

    def lose(self, per_mille: int) -> None:
        self.lost += self.counters().get("lost", 0)  # the flush forgets them
        self._nft(
            f"flush chain inet {_TABLE} loss\n"
            f'add rule inet {_TABLE} loss numgen random mod 1000 < {per_mille} counter drop comment "lost"\n'
        )

    def blackhole(self, port: int, server_port: int) -> None:
        """Drop every packet, both ways, of the connection from client ``port`` to
        ``server_port``; other connections that share the client port pass."""
        self._nft(f"add element inet {_TABLE} vanished {{ {port} . {server_port} }}\n")
        self._vanished.add((port, server_port))

    def release(self, port: int, server_port: int) -> None:
        """That connection's packets pass again (unless :meth:`clear` let them already)."""
        if (port, server_port) in self._vanished:
            self._vanished.discard((port, server_port))
            self._nft(f"delete element inet {_TABLE} vanished {{ {port} . {server_port} }}\n")

    def clear(self) -> None:
        self.lost += self.counters().get("lost", 0)
        self._nft(f"flush chain inet {_TABLE} loss\nflush set inet {_TABLE} vanished\n")
        self._vanished.clear()

    def counters(self) -> dict[str, int]:
        """Packets dropped by each rule, by its comment (summed over rules that share one)."""
        listing = json.loads(
            subprocess.run(
                ["nft", "-j", "list", "table", "inet", _TABLE], check=True, capture_output=True
            ).stdout
        )
        counts: dict[str, int] = {}
        for item in listing["nftables"]:
            rule = item.get("rule")
            if rule is None or "comment" not in rule:
                continue
            for expression in rule["expr"]:
                if "counter" in expression:
                    counts[rule["comment"]] = (
                        counts.get(rule["comment"], 0) + expression["counter"]["packets"]
                    )
        return counts


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()

"""How long a SIGTERM takes with FAF's peak running: the pod's grace period must cover it.

    .venv/bin/python -m benchmarks.shutdown [--games 400] [--uploaders 4] [--minutes 40]
        [--database none|mariadb|silent]

Starts ``twistd faf-replay`` (this checkout, production timers: delay 300 s,
grace 30 s, zstd 10) on a free port, opens the games (every uploader sends a
real header and ``--minutes`` of real body, the body of 22373098.scfareplay
over and over, and stays connected: the games are running), waits until the
spool holds every byte, then sends SIGTERM and times the exit. Every game must
be in the vault, byte for byte what was sent. Prints the figures and the
machine's CPU count.

``--database``: ``none`` runs standalone; ``mariadb`` gives the server FAF's
tables in the test suite's private MariaDB, a row per game, so that each save
reads its game's record and marks its row, as in production (the rows marked by
the exit are counted); ``silent`` gives it a database that accepts connections
and never answers (a hung MariaDB): each save then waits its ``--db-timeout``
and the row's work stays in the outbox for the next start (counted).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import fafreplay

from benchmarks.load.rows import Rows
from benchmarks.load.server import Server
from faf_replay.save.vault import vault_path
from faf_replay.settings import DEFAULT_SPOOL_NAME
from tests.support.recordings import recording, split


def stream_for(minutes: float) -> bytes:
    header, body = split(recording("22373098"))  # 3099 ticks = 310 s
    return header + body * max(1, round(minutes * 60 / 310))


def spooled(workdir: Path) -> int:
    spool = workdir / "replays" / DEFAULT_SPOOL_NAME / "games"
    total = 0
    for path in spool.rglob("*.upload"):
        with path.open("rb") as file:
            name, nul, _ = file.read(64).partition(b"\0")
        if nul:  # a file just created may not have its name yet
            total += path.stat().st_size - len(name) - 1
    return total


class SilentDatabase:
    """A TCP port that takes connections and says nothing, as a hung MariaDB does."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, name="silent-database", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return


def outbox_entries(workdir: Path) -> int:
    return len(list((workdir / "replays" / DEFAULT_SPOOL_NAME / "outbox").glob("*.json")))


def database_options(kind: str, games: int) -> tuple[list[str], Rows | None]:
    """The server's database options for ``--database``, and FAF's rows when real."""
    if kind == "mariadb":
        rows = Rows([700000 + game for game in range(games)])
        os.environ["FAF_REPLAY_DB_PASSWORD"] = rows.password
        return [f"--db={rows.url}"], rows
    if kind == "silent":
        silent = SilentDatabase()
        os.environ["FAF_REPLAY_DB_PASSWORD"] = "not-used"
        return [f"--db=mysql://faf@127.0.0.1:{silent.port}/faf"], None
    return [], None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=400)
    parser.add_argument("--uploaders", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=40)
    parser.add_argument("--zstd-level", type=int, default=10)
    parser.add_argument("--database", choices=["none", "mariadb", "silent"], default="none")
    args = parser.parse_args()
    data = stream_for(args.minutes)
    workdir = Path(tempfile.mkdtemp(prefix="faf-replay-shutdown-"))
    database, rows = database_options(args.database, args.games)
    server = Server(workdir, ["--delay=300", "--grace=30", f"--zstd-level={args.zstd_level}", *database])
    sockets = []
    try:
        for game in range(args.games):
            for who in range(args.uploaders):
                connection = socket.create_connection(("127.0.0.1", server.game_port))
                connection.sendall(f"P/{700000 + game}/u{who}.SCFAreplay\0".encode() + data)
                sockets.append(connection)
        expected = len(data) * len(sockets)
        deadline = time.monotonic() + 600
        while spooled(workdir) < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        started = time.monotonic()
        code = server.stop()
        took = time.monotonic() - started
        lost = 0
        for game in range(args.games):
            path = vault_path(workdir / "replays", 700000 + game)
            try:
                with path.open("rb") as file:
                    lost += fafreplay.extract_scfa(file) != data
            except OSError:
                lost += 1
        print(
            f"{args.games} running games x {args.uploaders} uploaders, {len(data) / 1e3:.0f} KB each "
            f"({args.minutes:g} min of real game), zstd {args.zstd_level}, database {args.database}, "
            f"{os.cpu_count()} CPUs"
        )
        print(
            f"SIGTERM to exit: {took:.1f} s (exit code {code}); {args.games - lost} saved whole, {lost} not"
        )
        if rows is not None:
            print(f"database rows marked replay_available = 1 by the exit: {rows.recorded()} of {args.games}")
        if args.database != "none":
            print(f"outbox entries left for the next start: {outbox_entries(workdir)}")
        print(f"the server's log: {workdir / 'server.log'}")
    finally:
        for connection in sockets:
            connection.close()
        if server.process.poll() is None:
            server.stop()


if __name__ == "__main__":
    main()

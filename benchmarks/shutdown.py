"""How long a SIGTERM takes with FAF's peak running: the pod's grace period must cover it.

    .venv/bin/python -m benchmarks.shutdown [--games 400] [--uploaders 4] [--minutes 40]

Starts ``twistd faf-replay`` (this checkout, production timers: delay 300 s,
grace 30 s, zstd 10) on a free port, opens the games (every uploader sends a
real header and ``--minutes`` of real body, the body of 22373098.scfareplay
over and over, and stays connected: the games are running), waits until the
spool holds every byte, then sends SIGTERM and times the exit. Every game must
be in the vault, byte for byte what was sent. Prints the figures and the
machine's CPU count.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import fafreplay

from benchmarks.load import Server
from faf_replay.settings import DEFAULT_SPOOL_NAME
from faf_replay.vault import vault_path
from tests.recordings import recording, split


def stream_for(minutes: float) -> bytes:
    header, body = split(recording("22373098"))  # 3099 ticks = 310 s
    return header + body * max(1, round(minutes * 60 / 310))


def spooled(workdir: Path) -> int:
    spool = workdir / "replays" / DEFAULT_SPOOL_NAME / "games"
    total = 0
    for path in spool.rglob("*.upload"):
        with path.open("rb") as file:
            total += path.stat().st_size - file.read(64).index(b"\0") - 1
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=400)
    parser.add_argument("--uploaders", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=40)
    parser.add_argument("--zstd-level", type=int, default=10)
    args = parser.parse_args()
    data = stream_for(args.minutes)
    workdir = Path(tempfile.mkdtemp(prefix="faf-replay-shutdown-"))
    server = Server(workdir, ["--delay=300", "--grace=30", f"--zstd-level={args.zstd_level}"])
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
            f"({args.minutes:g} min of real game), zstd {args.zstd_level}, {os.cpu_count()} CPUs"
        )
        print(
            f"SIGTERM to exit: {took:.1f} s (exit code {code}); {args.games - lost} saved whole, {lost} not"
        )
        print(f"the server's log: {workdir / 'server.log'}")
    finally:
        for connection in sockets:
            connection.close()
        if server.process.poll() is None:
            server.stop()


if __name__ == "__main__":
    main()

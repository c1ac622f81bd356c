"""Resident memory of a server with many live games, before and after they have
run a long time: is per-game memory flat in game length?

    .venv/bin/python -m benchmarks.memory [--games 100] [--uploaders 4] [--minutes 40]

Starts ``twistd faf-replay`` (this checkout) on a free port, opens the games
(every uploader sends the real header and the first minute of a real body),
measures the server's resident memory, then streams the rest of ``--minutes``
of real data (the body of 22373098.scfareplay over and over, as fast as the
loopback takes it) without closing any upload, and measures again. Prints the
figures and the machine's CPU count; the games stay live throughout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater

from benchmarks.load.server import Server
from faf_replay.settings import DEFAULT_SPOOL_NAME
from tests.support.recordings import recording, split


def rss_kib(server: Server) -> int:
    rss, _ = server.memory()
    return rss // 1024


class Upload(Protocol):
    def connectionMade(self):
        self.ready = True


def stream_for(minutes: float) -> tuple[bytes, int]:
    """Header + body lasting ``minutes`` of game time, and the first minute's length."""
    header, body = split(recording("22373098"))  # 3099 ticks = 310 s
    repeats = max(1, round(minutes * 60 / 310))
    one_minute = len(body) * 60 // 310
    return header + body * repeats, len(header) + one_minute


@defer.inlineCallbacks
def run(args, port: int, server: Server, workdir: Path):
    data, first = stream_for(args.minutes)
    uploads = []
    for game in range(args.games):
        for who in range(args.uploaders):
            protocol = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Upload())
            protocol.transport.write(f"P/{900000 + game}/u{who}.SCFAreplay\0".encode() + data[:first])
            uploads.append(protocol)
    yield deferLater(reactor, 3, lambda: None)  # let the server take it all in
    before = rss_kib(server)
    started = time.monotonic()
    step = 64 * 1024
    for offset in range(first, len(data), step):
        for protocol in uploads:
            protocol.transport.write(data[offset : offset + step])
        yield deferLater(reactor, 0, lambda: None)
    expected = len(data) * len(uploads)
    deadline = time.monotonic() + 600
    while (spooled := _spooled(workdir)) < expected and time.monotonic() < deadline:
        yield deferLater(reactor, 0.5, lambda: None)  # until the server has every byte
    yield deferLater(reactor, 2, lambda: None)  # and a few ticks of merging
    after = rss_kib(server)
    per_stream = len(data)
    print(
        f"{args.games} live games x {args.uploaders} uploaders, {args.minutes:g} min of real data each "
        f"({per_stream / 1e6:.2f} MB per upload, {per_stream * len(uploads) / 1e6:.0f} MB in all, "
        f"streamed in {time.monotonic() - started:.0f} s), {os.cpu_count()} CPUs"
    )
    print(f"bytes the server received and spooled: {spooled / 1e6:.0f} MB of {expected / 1e6:.0f} MB")
    print(f"server RSS after the first minute: {before / 1024:.1f} MiB")
    change = (after - before) / 1024
    print(f"server RSS after {args.minutes:g} minutes: {after / 1024:.1f} MiB ({change:+.1f} MiB)")
    for protocol in uploads:
        protocol.transport.abortConnection()


def _spooled(workdir: Path) -> int:
    return sum(path.stat().st_size for path in Path(workdir, "replays", DEFAULT_SPOOL_NAME).rglob("*.upload"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=100)
    parser.add_argument("--uploaders", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=40)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="faf-replay-memory-"))
    server = Server(workdir, ["--delay=300", "--grace=5"])
    try:
        result = []
        reactor.callWhenRunning(
            lambda: run(args, server.game_port, server, workdir).addBoth(
                lambda r: (result.append(r), reactor.stop())
            )
        )
        reactor.run()
        if result and hasattr(result[0], "getTraceback"):
            print(result[0].getTraceback(), file=sys.stderr)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

"""The floor: the least any live replay server must do with the benchmark's traffic.

    .venv/bin/python -m benchmarks.floor [--mode tick|every-write] [--port 0]

A bare Twisted server speaking the same connection protocol as faf-replay
(``P/<id>/<name>\\0`` then an upload, ``G/<id>/<name>\\0`` for a watcher) that
receives every upload and relays one stream per game to that game's watchers,
so that its watchers cost what faf-replay's do. It does nothing else: no
replay header parsing, no merge of the uploads, no delay, no spool, no saving,
no log lines, no metrics. The load benchmark runs it as a subprocess like the
real server (``--server floor``), and what it costs is the price of the
sockets themselves, the part of faf-replay's CPU no design can remove.

Two ways of reading:

- ``every-write``: every upload read as its bytes come (FA writes ten times a
  second), what a naive server does;
- ``tick``: each upload read once a second and no more: after its first read
  its socket leaves the reactor's reading set for good, and the tick of its
  group (connections in twenty groups by game, one group a twentieth of a
  second) reads it directly, one ``recv`` for what the kernel gathered since
  the last tick (``faf_replay.replay.tick_reads``, as faf-replay reads an upload once
  its replay header is in). No pause, no resume, no ``epoll_ctl`` per tick.

The relayed stream is, at every moment, the longest upload received so far
(the uploads of one game are copies of one stream, so each read only adds what
goes past the longest): no comparison of uploads. A diverging uploader that
happens to be ahead where it diverges is relayed as it is, which a merge would
have prevented; the benchmark counts watchers that got every byte apart from
those that got exactly the stream. The stream is kept in memory for watchers
that join late, and after the game: a game ends, and its watchers are closed,
when its last upload closes.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

from twisted.internet import protocol, task

from benchmarks.process import Process
from faf_replay.replay.tick_reads import read_now

ROOT = Path(__file__).resolve().parent.parent

#: tick groups: each is resumed once a tick, one after the other
GROUPS = 20
#: the longest connection header (``P/`` or ``G/`` and ``<id>/<name>\0``) accepted
MAX_HEADER = 1026


class Game:
    """One game: the stream relayed (the longest upload so far) and its watchers."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.length = 0
        self.uploads = 0  # open uploads
        self.ended = False
        self.watchers: set[Watcher] = set()

    def received(self, before: int, data: bytes) -> None:
        """An upload that had sent ``before`` bytes sent ``data``: relay what goes past the longest."""
        end = before + len(data)
        if end <= self.length:
            return
        new = data[self.length - before :] if before < self.length else data
        self.chunks.append(new)
        self.length = end
        for watcher in self.watchers:
            watcher.transport.write(new)

    def stream(self) -> bytes:
        """Everything relayed so far, for a watcher that joins now (kept as one piece from then on)."""
        if len(self.chunks) > 1:
            self.chunks = [b"".join(self.chunks)]
        return self.chunks[0] if self.chunks else b""


class Connection(protocol.Protocol):
    """A connection until its header is complete; then an upload or a watcher."""

    def __init__(self, factory: Floor) -> None:
        self.factory = factory
        self.header = b""

    def dataReceived(self, data: bytes) -> None:
        self.header += data
        end = self.header.find(b"\0")
        if end < 0:
            if len(self.header) > MAX_HEADER:
                self.transport.loseConnection()
            return
        kind, rest = self.header[:2], self.header[end + 1 :]
        try:
            game_id = int(self.header[2:end].split(b"/", 1)[0])
        except ValueError:
            game_id = None
        if kind not in (b"P/", b"G/") or game_id is None:
            self.transport.loseConnection()
            return
        role = Upload if kind == b"P/" else Watcher
        self.factory.become(self, role(self.factory, game_id), rest)


class Upload(protocol.Protocol):
    """An uploader: its bytes go to the game, read as they come or once a tick."""

    def __init__(self, factory: Floor, game_id: int) -> None:
        self.factory = factory
        self.game_id = game_id
        self.game = factory.game(game_id, upload=True)
        self.game.uploads += 1
        self.sent = 0

    def dataReceived(self, data: bytes) -> None:
        self.game.received(self.sent, data)
        self.sent += len(data)
        self.factory.reader.read(self)

    def connectionLost(self, reason=None) -> None:
        self.factory.reader.forget(self)
        self.game.uploads -= 1
        if self.game.uploads == 0:
            self.factory.end(self.game)


class Watcher(protocol.Protocol):
    """A watcher: the game's stream so far at once, then every new piece as it is relayed."""

    def __init__(self, factory: Floor, game_id: int) -> None:
        self.game = factory.game(game_id)

    def connectionMade(self) -> None:
        self.transport.write(self.game.stream())
        if self.game.ended:
            self.transport.loseConnection()
        else:
            self.game.watchers.add(self)

    def dataReceived(self, data: bytes) -> None:
        pass  # watchers have nothing to say

    def connectionLost(self, reason=None) -> None:
        self.game.watchers.discard(self)


class EveryWrite:
    """Reads every upload as its bytes come: nothing to do after a read."""

    def read(self, upload: Upload) -> None:
        pass

    def forget(self, upload: Upload) -> None:
        pass


class OncePerTick:
    """Reads each upload once a tick: out of the reactor's reading set after its
    first read, then read by its group's tick directly.

    Twenty groups by game id (as faf-replay's tick groups), one read every
    twentieth of ``interval``, so that the reads are spread over the tick.
    """

    def __init__(self, clock, interval: float = 1.0) -> None:
        self.groups: list[set[Upload]] = [set() for _ in range(GROUPS)]
        self.next = 0
        self.group_reads = 0  # groups read so far (GROUPS a tick)
        self.loop = task.LoopingCall(self.read_next_group)
        self.loop.clock = clock
        self.loop.start(interval / GROUPS, now=False)

    def read(self, upload: Upload) -> None:
        group = self.groups[upload.game_id % GROUPS]
        if upload not in group:  # its first read: from now on the tick reads it
            upload.transport.stopReading()
            group.add(upload)

    def forget(self, upload: Upload) -> None:
        self.groups[upload.game_id % GROUPS].discard(upload)

    def read_next_group(self) -> None:
        group = self.groups[self.next]
        self.next = (self.next + 1) % GROUPS
        self.group_reads += 1
        for upload in list(group):
            read_now(upload.transport)  # the bytes go to dataReceived; the end to connectionLost

    def stop(self) -> None:
        self.loop.stop()


class Floor(protocol.Factory):
    """The floor server: games by id, and how uploads are read."""

    def __init__(self, reader) -> None:
        self.reader = reader
        self.games: dict[int, Game] = {}

    def buildProtocol(self, addr) -> Connection:
        return Connection(self)

    def game(self, game_id: int, upload: bool = False) -> Game:
        """The game of that id; for an upload, a new one if the last game of that id has ended."""
        game = self.games.get(game_id)
        if game is None or (upload and game.ended):
            game = self.games[game_id] = Game()
        return game

    def become(self, connection: Connection, role: protocol.Protocol, rest: bytes) -> None:
        """Hand a connection whose header is read to its upload or watcher protocol."""
        transport = connection.transport
        role.makeConnection(transport)
        transport.protocol = role
        if rest:
            role.dataReceived(rest)

    def end(self, game: Game) -> None:
        """The last upload closed: the watchers get the rest (already written) and are closed.

        The game stays, for watchers that come later (they get all of it at
        once); a new upload for its id starts a new game.
        """
        game.ended = True
        for watcher in list(game.watchers):
            watcher.transport.loseConnection()


def reader_for(mode: str, clock, interval: float = 1.0):
    return OncePerTick(clock, interval) if mode == "tick" else EveryWrite()


class FloorProcess(Process):
    """The floor as a subprocess of the benchmark, on a free port; it saves nothing."""

    saves = False

    def __init__(self, workdir: Path, mode: str) -> None:
        self.kind = "floor" if mode == "tick" else f"floor-{mode}"
        command = [sys.executable, "-m", "benchmarks.floor", f"--mode={mode}"]
        super().__init__(workdir, command, {**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
        self.game_port = int(self.wait_for_log(rb"listening on (\d+)", "listening port").group(1))


def main() -> None:
    from twisted.internet import reactor  # noqa: PLC0415 - the default reactor: epoll on Linux

    parser = argparse.ArgumentParser(description="the floor of the load benchmark")
    parser.add_argument("--mode", choices=["tick", "every-write"], default="tick")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds of a tick")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    factory = Floor(reader_for(args.mode, reactor, args.interval))
    port = reactor.listenTCP(args.port, factory, backlog=4096, interface="127.0.0.1")
    print(f"floor ({args.mode}) listening on {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()

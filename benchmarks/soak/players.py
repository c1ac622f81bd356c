"""The soak's clients: players uploading real recordings paced by their ticks, watchers
following the games, and the fuzz suite's hostile connections. Twisted protocols on one
reactor, over TCP and WebSocket (``tests.support.clients``).

What the checks need is kept as it happens: per game (:class:`GameLog`) when each body byte was
sent (``L(t)``, the most body bytes any upload had sent by ``t``), which uploads were cut and
when the last one stopped; per watcher (:class:`WatchLog`) the replay header it got, a digest and
the length of the body, and every byte that came earlier than the delay allows.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol

from benchmarks.load.streams import split, tick_times
from benchmarks.soak.plan import GamePlan, Plan, UploadPlan, WatchPlan
from benchmarks.soak.stack import GAME_PORT, WS_PORT
from tests.support.clients import WebSocketClient, connect
from tests.support.fuzz_server import local_port
from tests.support.recordings import recording

#: Seconds between two writes of an upload (FA writes every tick; time is compressed).
WRITE_INTERVAL = 0.2
#: Seconds between two tries to connect while the server is down.
RETRY = 0.5


def connect_websocket(port: int, protocol: Protocol) -> Deferred:
    """``protocol`` over a WebSocket to ``port``: fires once it is open, fails when the
    connection is refused or closes first (the test clients' helper waits forever on a refusal)."""
    opened: Deferred = Deferred()
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/")
    factory.protocol = lambda: WebSocketClient(protocol, opened)  # type: ignore[assignment]
    factory.setProtocolOptions(openHandshakeTimeout=10, closeHandshakeTimeout=30)
    connecting = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10).connect(factory)
    connecting.addErrback(lambda failure: None if opened.called else opened.errback(failure))
    return opened


@dataclass
class GameLog:
    """One game as its players saw it."""

    plan: GamePlan
    header_size: int
    #: (wall time, L): L rises when an upload's body passes the most sent so far.
    sent: list[tuple[float, int]] = field(default_factory=lambda: [(0.0, 0)])
    open_uploads: int = 0
    #: When the last upload stopped (sent all, was cut, or vanished), client's clock.
    ended_at: float | None = None
    #: Uploads whose connection ended without their closing it: (seconds into the run, which).
    cuts: list[tuple[float, str]] = field(default_factory=list)
    vanished: int = 0
    #: Uploads that stopped before sending everything: cut (by a fault or the network) or
    #: vanished, by name.
    unfinished: set[str] = field(default_factory=set)
    #: When the first upload connected.
    connected_at: float | None = None

    def body_sent(self, now: float, body: int) -> None:
        if body > self.sent[-1][1]:
            self.sent.append((now, body))

    def most_sent_by(self, moment: float) -> int:
        """L(moment): the most body bytes any upload had sent by then."""
        index = bisect.bisect_right(self.sent, (moment, float("inf"))) - 1
        return self.sent[index][1] if index >= 0 else 0

    def upload_stopped(self) -> None:
        self.open_uploads -= 1
        if self.open_uploads == 0:
            self.ended_at = time.time()


@dataclass
class WatchLog:
    game: int
    plan: WatchPlan
    header: bytearray = field(default_factory=bytearray)
    body: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    #: Bytes that came before the delay allowed them: (when, body bytes had, allowed).
    early: list[tuple[float, int, int]] = field(default_factory=list)
    connected: bool = False
    ended: str = ""  # "closed" (by the server, or lost), "left" (by us), "never" (no connection)


class Pacing:
    """Where an upload of ``name`` should be ``seconds`` into a game of ``length``: its
    recording's header at once, then its body as the recording's ticks come, stretched."""

    _tables: dict[str, tuple[list[float], list[int], float]] = {}

    def __init__(self, name: str, length: float) -> None:
        if name not in self._tables:
            ticks = tick_times(recording(name), 1.0)
            self._tables[name] = ([at for at, _ in ticks], [end for _, end in ticks], ticks[-1][0])
        self.times, self.offsets, total = self._tables[name]
        self.stretch = length / total if total else 1.0
        self.header = len(split(recording(name))[0])

    def offset(self, seconds: float) -> int:
        reached = bisect.bisect_right(self.times, seconds / self.stretch)
        return self.offsets[reached - 1] if reached else self.header


def load_by_plan(plan: Plan, at: float, life_began: float) -> tuple[float, float]:
    """The body MiB the games a server life holds at ``at`` (seconds into the run) had been sent,
    and the MiB their uploads had sent, from the plan alone: the games started since the life
    began and not over (a kill or a deploy cuts the games of the life before; FA does not
    reconnect). What the sampler measures as ``held_mib`` and ``sent_mib``, for a report from
    before it did."""
    held = sent = 0
    for game in plan.games:
        if life_began <= game.start <= at < game.start + game.length:
            elapsed = at - game.start
            offsets = [Pacing(upload.recording, game.length).offset(elapsed) for upload in game.uploads]
            held += max(
                offset - Pacing(upload.recording, 1).header
                for offset, upload in zip(offsets, game.uploads, strict=True)
            )
            sent += sum(offsets)
    return held / 2**20, sent / 2**20


class Upload(Protocol):
    """One player's replay upload: ``P/<game>/<name>\\0``, then the recording as the game goes."""

    def __init__(self, players: Players, log: GameLog, plan: UploadPlan, number: int) -> None:
        self.players, self.log, self.plan = players, log, plan
        self.name = f"p{number}.SCFAreplay"
        self.data = recording(plan.recording)
        self.pacing = Pacing(plan.recording, log.plan.length)
        self.sent = 0
        self.state = "connecting"  # connected, done (sent all), cut, vanished
        #: The server's port it talks to (its plan's transport's); with its own (``port``, once
        #: connected) the pair names its connection for a blackhole: the kernel may give the
        #: same client port to a connection to the other server port meanwhile.
        self.server_port = WS_PORT if plan.transport == "ws" else GAME_PORT
        self.port: int | None = None
        #: (wall time, bytes sent after ``P/…\0``) of its last writes: what it had sent when.
        self.recent: deque[tuple[float, int]] = deque(maxlen=64)

    def start(self) -> None:
        port = self.server_port
        opened = connect_websocket(port, self) if self.plan.transport == "ws" else connect(port, self)
        opened.addErrback(self._refused)

    def _refused(self, _failure: Any) -> None:
        if self.state == "connecting" and not self.players.stopping:
            reactor.callLater(RETRY, self.start)

    def connectionMade(self) -> None:
        self.state = "connected"
        self.port = local_port(self.transport)
        if self.log.connected_at is None:
            self.log.connected_at = time.time()
        self.transport.write(f"P/{self.log.plan.id}/{self.name}\0".encode())
        self.players.uploading.add(self)
        if self.plan.vanishes_at is not None:
            at = self.players.started_at + self.log.plan.start + self.plan.vanishes_at
            reactor.callLater(max(0.0, at - time.time()), self.vanish)
        self.tick(time.time())

    def tick(self, now: float) -> None:
        if self.state != "connected":
            return
        target = self.pacing.offset(now - self.players.started_at - self.log.plan.start)
        if target > self.sent:
            self.transport.write(self.data[self.sent : target])
            self.sent = target
            self.recent.append((now, target))
            self.log.body_sent(now, self.sent - self.pacing.header)
        if self.sent >= len(self.data):
            self.state = "done"
            self.players.uploading.discard(self)
            self.log.upload_stopped()
            self.transport.loseConnection()

    def vanish(self) -> None:
        """Its machine is gone: every packet of its connection dropped, no FIN, no RST."""
        if self.state != "connected" or self.port is None:
            return
        self.state = "vanished"
        self.players.uploading.discard(self)
        self.log.vanished += 1
        self.log.unfinished.add(self.name)
        self.log.upload_stopped()
        self.players.blackhole(self.port, self.server_port, self.transport)

    def connectionLost(self, reason: Any = None) -> None:
        if self.state == "connected":
            self.state = "cut"
            self.players.uploading.discard(self)
            self.log.unfinished.add(self.name)
            self.log.cuts.append((time.time() - self.players.started_at, f"{self.name} at byte {self.sent}"))
            self.log.upload_stopped()


class Watch(Protocol):
    """One watcher: ``G/<game>/<name>\\0``, then whatever the server sends, checked against
    the delay as it comes; slow ones read in bursts, some leave early."""

    def __init__(self, players: Players, log: GameLog, watch: WatchLog, delay: float) -> None:
        self.players, self.game, self.watch, self.delay = players, log, watch, delay
        self.tries = 0
        self._pausing: Any = None

    def start(self) -> None:
        self.tries += 1
        port = WS_PORT if self.watch.plan.transport == "ws" else GAME_PORT
        opened = connect_websocket(port, self) if self.watch.plan.transport == "ws" else connect(port, self)
        opened.addErrback(self._refused)

    def _refused(self, _failure: Any) -> None:
        if self.tries < 20 and not self.players.stopping:
            reactor.callLater(RETRY, self.start)
        elif not self.watch.connected:
            self.watch.ended = "never"

    def connectionMade(self) -> None:
        self.watch.connected = True
        self.players.watching += 1
        self.transport.write(f"G/{self.game.plan.id}/watcher\0".encode())
        if self.watch.plan.leaves_after is not None:
            reactor.callLater(self.watch.plan.leaves_after, self.leave)
        if self.watch.plan.slow:
            self._pause()

    def _pause(self) -> None:
        if self.watch.ended:
            return
        self.transport.pauseProducing()
        self._pausing = reactor.callLater(4.0, self._resume)

    def _resume(self) -> None:
        if self.watch.ended:
            return
        self.transport.resumeProducing()
        self._pausing = reactor.callLater(1.0, self._pause)

    def leave(self) -> None:
        if not self.watch.ended:
            self.watch.ended = "left"
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        now = time.time()
        missing = self.game.header_size - len(self.watch.header)
        if missing > 0:
            self.watch.header += data[:missing]
            data = data[missing:]
        if not data:
            return
        self.watch.digest.update(data)
        self.watch.body += len(data)
        if self.game.ended_at is None or now < self.game.ended_at:
            allowed = self.game.most_sent_by(now - self.delay)
            if self.watch.body > allowed:
                self.watch.early.append((now, self.watch.body, allowed))

    def connectionLost(self, reason: Any = None) -> None:
        self.players.watching -= 1
        if self._pausing is not None and self._pausing.active():
            self._pausing.cancel()
        if not self.watch.ended:
            self.watch.ended = "closed"


class Players:
    """Every client of the run on this reactor: games started at their planned time, the
    uploads written every :data:`WRITE_INTERVAL`, hostile cases at theirs."""

    def __init__(
        self,
        started_at: float,
        delay: float,
        blackhole: Callable[[int, int], None],
        release: Callable[[int, int], None],
        vanish_for: float,
    ) -> None:
        self.started_at = started_at
        self.delay = delay
        self._blackhole, self._release, self._vanish_for = blackhole, release, vanish_for
        self.games: dict[int, GameLog] = {}
        self.watches: list[WatchLog] = []
        self.uploading: set[Upload] = set()
        self.watching = 0  # watchers connected now
        self.stopping = False
        self.hostile = 0

    def start_game(self, plan: GamePlan) -> None:
        header = Pacing(plan.uploads[0].recording, plan.length).header
        log = GameLog(plan, header, open_uploads=len(plan.uploads))
        self.games[plan.id] = log
        for number, upload in enumerate(plan.uploads):
            Upload(self, log, upload, number).start()
        for watcher in plan.watchers:
            watch = WatchLog(plan.id, watcher)
            self.watches.append(watch)
            reactor.callLater(watcher.join, Watch(self, log, watch, self.delay).start)

    def tick(self) -> None:
        now = time.time()
        for upload in list(self.uploading):
            upload.tick(now)

    def blackhole(self, port: int, server_port: int, transport: Any) -> None:
        """Drop the packets of the connection from client ``port`` to ``server_port`` (the
        pair: the kernel may reuse the client port for a connection to the other server port
        while this one holds it, and that one must pass); once the server has surely given up
        on it, let the client's side go (its RST dropped too) and the pair pass again."""
        self._blackhole(port, server_port)

        def forget() -> None:
            transport.abortConnection()
            reactor.callLater(2.0, self._release, port, server_port)

        reactor.callLater(self._vanish_for, forget)

    def behind(self, spooled: dict[int, dict[str, int]], moment: float) -> tuple[int, int, int]:
        """Uploads sending now, those whose spool file holds less than they had sent by
        ``moment``, and by how many bytes in all: durability that stopped."""
        checked = behind = missing = 0
        for upload in self.uploading:
            sent = max((size for at, size in upload.recent if at <= moment), default=None)
            if sent is None or upload.recent[0][0] > moment - 1:
                continue  # too new to judge
            checked += 1
            held = spooled.get(upload.log.plan.id, {}).get(upload.name, 0)
            if held < sent:
                behind += 1
                missing += sent - held
        return checked, behind, missing

    def start_hostile(self, case: Any, game_id: int) -> None:
        """One fuzzed case (``tests.support.mutations.Case``): its connections, each as drawn."""
        from tests.support.fuzz_server import Client  # noqa: PLC0415

        self.hostile += 1
        for connection in case.connections:
            client = Client(
                connection.data(game_id),
                pieces=connection.pieces,
                pause=connection.pause,
                then=connection.then,
            )

            def go(client: Client = client, transport: str = connection.transport) -> None:
                if self.stopping:
                    return
                opened = (
                    connect_websocket(WS_PORT, client) if transport == "ws" else connect(GAME_PORT, client)
                )
                opened.addErrback(lambda failure, client=client: client.give_up(failure.getErrorMessage()))

            reactor.callLater(connection.delay, go)

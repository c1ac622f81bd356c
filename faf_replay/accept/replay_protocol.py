"""Where every connection starts: the connection header, then a switch.

A :class:`ReplayProtocol` reads ``P/…\\0`` or ``G/…\\0`` (parsed in
``header.py``), finds the game in the :class:`GameRegistry`, and from
then on hands every byte and the end of the connection to an
:class:`~faf_replay.replay.upload.UploadProtocol` or a
:class:`~faf_replay.replay.download.DownloadProtocol`, with the bytes that followed the
header first. Bad input is logged once with its reason, counted, and closes
this connection only. Where a connection is, is its :class:`Phase`, changed
only by ``ReplayProtocol._enter`` along :data:`MOVES`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from faf_replay import metrics
from faf_replay.accept.client_address import TrustedProxies
from faf_replay.accept.connection import ConnectionProtocol
from faf_replay.accept.header import (
    ConnectionHeader,
    ConnectionHeaderError,
    ConnectionHeaderParser,
    Kind,
)
from faf_replay.accept.keepalive import KnownLoss
from faf_replay.accept.limits import ConnectionLimits, Place
from faf_replay.replay.download import DownloadProtocol, WatchedReplay
from faf_replay.replay.registry import GameRegistry
from faf_replay.replay.upload import UploadProtocol
from faf_replay.replay.vault_replays import VaultReplay

log = Logger()


def describe_peer(address: IAddress | None) -> str:
    """``host:port``; just the host when the port is unknown (0: a client named
    by a proxy's ``X-Forwarded-For``)."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None:
        return str(address)
    if not port:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Phase(enum.Enum):
    """Where a connection is; :data:`MOVES` says where it may go next."""

    HEADER = "reading its connection header"
    ADMITTING = (
        "waiting: for the vault (and the database) to admit the upload that would start a game, for that"
        " answer (a watcher of the game), or for the vault to read an ended game"
    )
    SWITCHED = "an upload or a watcher"
    CLOSED = "refused, rejected or gone"


MOVES = {
    (Phase.HEADER, Phase.ADMITTING),
    (Phase.HEADER, Phase.SWITCHED),
    (Phase.HEADER, Phase.CLOSED),
    (Phase.ADMITTING, Phase.SWITCHED),
    (Phase.ADMITTING, Phase.CLOSED),
}
#: Phases counted as ``initial`` connections (not yet an upload or a watcher).
_WAITING = (Phase.HEADER, Phase.ADMITTING)


class ReplayProtocol(ConnectionProtocol):
    def __init__(self, registry: GameRegistry, clock: IReactorTime, release: Callable[[], None]) -> None:
        self._registry = registry
        self._clock = clock
        self._release = release
        self._parser = ConnectionHeaderParser()
        self.phase = Phase.HEADER
        self._sub: Protocol | None = None
        self._timeout: IDelayedCall | None = None
        # Bytes that arrive while the vault or the database decides on an upload.
        self._admitting = bytearray()
        # How an upload's connection ended while it waited for that answer, having sent bytes:
        # they are kept, and the answer starts the upload with them and then ends it.
        self._lost_admitting: Failure | None = None
        self._upload_admitting = False
        self.peer = "?"

    @property
    def sub(self) -> Protocol | None:
        """The upload or the watcher this connection switched into."""
        return self._sub

    def _enter(self, phase: Phase) -> None:
        """Every change of phase; leaving the header phase stops its timeout, becoming an upload
        or a watcher (or closed) leaves the ``initial`` gauge."""
        if (self.phase, phase) not in MOVES:
            raise RuntimeError(f"a connection cannot move from {self.phase.name} to {phase.name}")
        if self.phase is Phase.HEADER:
            if self._timeout is not None and self._timeout.active():
                self._timeout.cancel()
            self._timeout = None
        if self.phase in _WAITING and phase not in _WAITING:
            metrics.active["initial"].dec()  # a connection waiting for an answer is counted still
        self.phase = phase

    def connectionMade(self) -> None:
        self.peer = describe_peer(self.connection.getPeer())
        metrics.active["initial"].inc()
        self._timeout = self._clock.callLater(self._registry.settings.header_timeout, self._header_timed_out)

    def dataReceived(self, data: bytes) -> None:
        sub = self._sub
        if sub is not None:  # SWITCHED: every byte of every upload comes this way
            sub.dataReceived(data)
        elif self.phase is Phase.ADMITTING:
            self._admitting += data
        elif self.phase is Phase.HEADER:
            try:
                parsed = self._parser.feed(data)
            except ConnectionHeaderError as error:
                self._reject("bad connection header", str(error))
                return
            if parsed is not None:
                self._switch(*parsed)

    def _switch(self, header: ConnectionHeader, rest: bytes) -> None:
        if header.kind is Kind.DOWNLOAD:
            starting = self._registry.admission_of(header.game_id)
            if starting is not None:
                # The game's first upload waits for its admission: so does the watcher, who
                # then joins the game, or finds it in the vault.
                self._hold(rest)
                starting.addCallback(self._game_decided, header)
                return
            self._watch(header, rest)
            return
        if self._registry.needs_admission(header.game_id):
            # Stop reading until the vault (and the database) say whether this game may start.
            self._hold(rest)
            self._upload_admitting = True
            self._registry.admit_upload(header.game_id).addCallback(self._admitted, header)
            return
        self._start(header, rest)

    def _hold(self, rest: bytes) -> None:
        """Stop reading until an answer comes (``ADMITTING``); bytes meanwhile are kept."""
        if self.phase is not Phase.ADMITTING:
            self._enter(Phase.ADMITTING)
            self.connection.pauseProducing()
        self._admitting += rest

    def _watch(self, header: ConnectionHeader, rest: bytes) -> None:
        vault = self._registry.vault_replays
        if vault is not None and self._registry.ended(header.game_id):
            # Stop reading until the vault's copy is read (docs/protocol.md: watching an ended game).
            self._hold(rest)
            hold = self._registry.vault_hold(header.game_id)
            vault.open(header.game_id, hold).addCallback(self._from_vault, header)
            return
        if self.phase is Phase.ADMITTING:
            self.connection.resumeProducing()
        self._start(header, rest)

    def _game_decided(self, _refusal: object, header: ConnectionHeader) -> None:
        if self.phase is not Phase.ADMITTING:
            return  # the watcher went away meanwhile
        buffered, self._admitting = bytes(self._admitting), bytearray()
        self._watch(header, buffered)

    def _admitted(self, refusal: str | None, header: ConnectionHeader) -> None:
        buffered, self._admitting = bytes(self._admitting), bytearray()
        if self.phase is not Phase.ADMITTING:
            return  # the connection went away, nothing sent yet, while we asked
        lost = self._lost_admitting
        if lost is None:
            self.connection.resumeProducing()
        if refusal is not None:
            detail = f"upload for game {header.game_id} refused: {refusal}"
            self._refuse(header, "not admitted", detail, close=lost is None)
            return
        self._start(header, buffered)
        if lost is not None and self._sub is not None:
            self._sub.connectionLost(lost)  # a short game sent whole before the answer came

    def _from_vault(self, replay: VaultReplay | None, header: ConnectionHeader) -> None:
        buffered, self._admitting = bytes(self._admitting), bytearray()
        if self.phase is not Phase.ADMITTING:
            return  # the connection went away while the vault was read
        self.connection.resumeProducing()
        if replay is None:
            self._start(header, buffered)  # refused as any game not live (or, if it became live, joined)
            return
        log.info(
            "game {game_id}: watcher {name!r} from {peer} watches the ended game from the vault",
            game_id=header.game_id,
            name=header.name,
            peer=self.peer,
        )
        self._switch_to(self._watcher(replay, header, "vault"), buffered)

    def _watcher(self, replay: WatchedReplay, header: ConnectionHeader, source: str) -> DownloadProtocol:
        metrics.watchers_served.labels(source).inc()
        return DownloadProtocol(replay, header.name, self.peer, self._clock, self._registry.settings)

    def _start(self, header: ConnectionHeader, rest: bytes) -> None:
        sub: Protocol
        settings = self._registry.settings
        if header.kind is Kind.UPLOAD:
            game, refusal = self._registry.game_for_upload(header.game_id)
            if game is None:
                assert refusal is not None
                self._refuse(
                    header, refusal.label, f"upload for game {header.game_id} refused: {refusal.detail}"
                )
                return
            upload = UploadProtocol(game, game.new_stream(header.name), self.peer, self._clock, settings)
            game.add_uploader(upload)
            sub = upload
        else:
            game, refusal = self._registry.game_for_watch(header.game_id)
            if game is None:
                assert refusal is not None
                self._refuse(header, refusal.label, f"cannot watch game {header.game_id}: {refusal.detail}")
                return
            download = self._watcher(game, header, "live")
            game.add_watcher(download)
            sub = download
        self._switch_to(sub, rest)

    def _switch_to(self, sub: Protocol, rest: bytes) -> None:
        self._enter(Phase.SWITCHED)
        self._sub = sub
        assert self.transport is not None  # connected: its bytes brought us here
        sub.makeConnection(self.transport)
        if rest:
            sub.dataReceived(rest)

    def _header_timed_out(self) -> None:
        self._timeout = None
        timeout = self._registry.settings.header_timeout
        self._reject("header timeout", f"no complete connection header within {timeout:g} s")

    def _reject(self, reason: str, detail: str) -> None:
        self._enter(Phase.CLOSED)
        metrics.rejected_connections.labels(reason).inc()
        metrics.served[metrics.BAD_DATA].inc()
        log.warn("connection from {peer} rejected: {detail}", peer=self.peer, detail=detail)
        self.connection.loseConnection()

    def _refuse(self, header: ConnectionHeader, reason: str, detail: str, *, close: bool = True) -> None:
        """A well-formed request we cannot serve: close without a byte sent (unless the
        connection is gone already: ``close`` False)."""
        self._enter(Phase.CLOSED)
        metrics.rejected_connections.labels(reason).inc()
        metrics.served[metrics.NO_REPLAY].inc()
        log.info("connection {name!r} from {peer}: {detail}", name=header.name, peer=self.peer, detail=detail)
        if close:
            self.connection.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._release()
        phase = self.phase
        if phase is Phase.SWITCHED:
            assert self._sub is not None
            self._sub.connectionLost(reason)
            return
        if phase is Phase.CLOSED:
            return
        if phase is Phase.ADMITTING and self._upload_admitting and self._admitting:
            self._lost_admitting = reason or connectionDone  # the answer decides what its bytes become
            return
        self._enter(Phase.CLOSED)
        if phase is Phase.ADMITTING:
            metrics.served[metrics.EMPTY].inc()
            log.info("connection from {peer} closed while its game was being checked", peer=self.peer)
            return
        known = reason.value if reason is not None and isinstance(reason.value, KnownLoss) else None
        if known is not None:  # a WebSocket that vanished, or broke the protocol, in the lobby
            metrics.lost_connections.labels("initial", known.verdict).inc()
        if self._parser.received < 2:
            # A player leaving the lobby: FA opened the socket and never used it.
            metrics.served[metrics.EMPTY].inc()
            if known is not None:
                log.info(
                    "connection from {peer} lost before its header: {why}", peer=self.peer, why=known.detail
                )
            return
        metrics.rejected_connections.labels("incomplete header").inc()
        metrics.served[metrics.BAD_DATA].inc()
        log.warn(
            "connection from {peer} closed after {received} bytes, before its header was complete",
            peer=self.peer,
            received=self._parser.received,
        )


class Refusals:
    """Connections refused before a byte is read: each counted by reason, with
    at most one log line per reason every ``interval`` seconds (a flood must
    not flood the log)."""

    def __init__(self, clock: IReactorTime, interval: float = 10.0) -> None:
        self.clock = clock
        self.interval = interval
        self._refused: dict[str, tuple[float, int]] = {}  # reason -> (last log, refused since)

    def refuse(self, reason: str, addr: IAddress | None) -> None:
        metrics.rejected_connections.labels(reason).inc()
        now = self.clock.seconds()
        last, count = self._refused.get(reason, (float("-inf"), 0))
        count += 1
        if now - last >= self.interval:
            log.warn(
                "connection from {peer} refused: {reason} ({count} refused since the last such line)",
                peer=describe_peer(addr),
                reason=reason,
                count=count,
            )
            self._refused[reason] = (now, 0)
        else:
            self._refused[reason] = (last, count)


class ReplayFactory(Factory):
    """Builds a :class:`ReplayProtocol` per connection, within the connection limits.

    ``addr`` is the client's address: behind a proxy, the one it vouched for
    (``proxied.py``, ``websocket.py``). A trusted proxy's own address
    has no per-address limit: it speaks for many clients."""

    def __init__(
        self, registry: GameRegistry, clock: IReactorTime, trusted: TrustedProxies | None = None
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.trusted = trusted or TrustedProxies()
        settings = registry.settings
        self.limits = ConnectionLimits(
            settings.max_connections_per_address, settings.max_connections, unlimited=self.trusted.trusts
        )
        self.refusals = Refusals(clock)

    def buildProtocol(self, addr: IAddress | None) -> ReplayProtocol | None:
        host = str(getattr(addr, "host", addr))
        reason = self.limits.admit(host)
        if reason is not None:
            self.refusals.refuse(reason, addr)
            return None  # closed at once, before a byte is read
        return ReplayProtocol(self.registry, self.clock, Place(self.limits, host))

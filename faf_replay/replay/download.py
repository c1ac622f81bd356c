"""The download sub-protocol: sending a game's merged replay to one watcher.

``ReplayProtocol`` switches into :class:`DownloadProtocol` after ``G/…\\0``.
The watcher gets the replay header as soon as the game knows it, then the body
as the delay releases it. It is a push producer on its transport: when the
socket's buffer is full the transport pauses it and it stops reading from the
game, so a slow watcher costs a bounded buffer and slows nobody else. The bytes
themselves live once, in the game. After the last byte the connection stays
open a moment (``linger``) before it closes: FA may lose the end of a replay
otherwise. A watcher whose socket stays full while it acknowledges nothing for
``watcher_stall_timeout`` (a frozen or dead viewer) is closed; one that reads,
however slowly, is not.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from faf_replay import metrics
from faf_replay.accept.connection import ConnectionProtocol
from faf_replay.accept.keepalive import acknowledged, loss_of
from faf_replay.settings import Settings

log = Logger()


class WatchedReplay(Protocol):
    """What a watcher reads: a live :class:`~faf_replay.replay.game.Game`, or an
    ended one from the vault (``vault_replays.VaultReplay``)."""

    game_id: int
    #: The replay header, once known.
    header: bytes | None
    #: Body bytes the watcher may have now.
    visible: int
    #: No more will become visible.
    write_phase_over: bool

    def read(self, start: int, end: int) -> bytes: ...

    def remove_watcher(self, watcher: Any) -> None: ...


@implementer(IPushProducer)
class DownloadProtocol(ConnectionProtocol):
    def __init__(
        self, game: WatchedReplay, name: str, peer: str, clock: IReactorTime, settings: Settings
    ) -> None:
        self.game = game
        self.name = name
        self.peer = peer
        self._clock = clock
        self._settings = settings
        self._linger = settings.linger
        self._paused = False
        #: The socket took bytes (or we had none to give) at this time.
        self._progress_at = clock.seconds()
        #: A check of a full socket: when due, what the peer had acknowledged then.
        self._stall_check: IDelayedCall | None = None
        self._acknowledged: int | None = None
        self._header_sent = False
        self._position = 0  # body bytes sent
        self.sent = 0  # all bytes sent
        self._closing: IDelayedCall | None = None
        self._closed = False

    def connectionMade(self) -> None:
        metrics.active["reader"].inc()
        self.connection.registerProducer(self, True)
        self.game_updated()

    def dataReceived(self, data: bytes) -> None:
        """Watchers have nothing to say after their header; ignore it."""

    # -- from the game --------------------------------------------------------

    def game_updated(self) -> None:
        if not self._paused and not self._closed:
            self._send()

    def close(self) -> None:
        """Close now, whatever is left (shutdown, drain timeout)."""
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        self._close()

    # -- sending --------------------------------------------------------------

    def _send(self) -> None:
        game = self.game
        if not self._header_sent:
            if game.header is None:
                if game.write_phase_over:
                    self._all_sent()
                return
            self._write(game.header)
            self._header_sent = True
        while not self._paused and self._position < game.visible:
            data = game.read(self._position, game.visible)
            self._position += len(data)
            self._write(data)
        if not self._paused:
            self._progress_at = self._clock.seconds()  # all it may have so far is on its way
        if game.write_phase_over and self._position >= game.visible:
            self._all_sent()

    def _write(self, data: bytes) -> None:
        self.sent += len(data)
        metrics.sent_bytes.inc(len(data))
        self.connection.write(data)

    def _all_sent(self) -> None:
        if self._closing is None and not self._closed:
            self._closing = self._clock.callLater(self._linger, self._close)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.connection.unregisterProducer()
        self.connection.loseConnection()

    # -- a watcher that stopped reading ----------------------------------------

    def _watch_stall(self) -> None:
        """The socket is full: check, ``watcher_stall_timeout`` from now, that the
        watcher acknowledged something meanwhile (one timer at a time, however
        often a slow watcher fills its socket)."""
        timeout = self._settings.watcher_stall_timeout
        if timeout and self._stall_check is None and not self._closed:
            self._acknowledged = acknowledged(self.transport)
            self._stall_check = self._clock.callLater(timeout, self._check_stall)

    def _check_stall(self) -> None:
        self._stall_check = None
        if not self._paused or self._closed:
            return  # it drained: a slow watcher, alive
        now_acknowledged = acknowledged(self.transport)
        moved = now_acknowledged is not None and now_acknowledged != self._acknowledged
        if moved or self._clock.seconds() - self._progress_at < self._settings.watcher_stall_timeout:
            self._watch_stall()  # slow but alive: look again later
            return
        metrics.stalled_watchers.inc()
        log.warn(
            "game {game_id}: watcher {name!r} from {peer} acknowledged nothing for {timeout:g} s while "
            "its socket stayed full; closed",
            game_id=self.game.game_id,
            name=self.name,
            peer=self.peer,
            timeout=self._settings.watcher_stall_timeout,
        )
        self._closed = True
        self.connection.unregisterProducer()
        self.connection.abortConnection()  # it reads nothing: a close would wait for it forever

    # -- IPushProducer --------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        self._watch_stall()

    def resumeProducing(self) -> None:
        self._paused = False
        self._progress_at = self._clock.seconds()
        if not self._closed:
            self._send()

    def stopProducing(self) -> None:
        self._paused = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        metrics.active["reader"].dec()
        metrics.served[metrics.SUCCESS].inc()
        for call in (self._closing, self._stall_check):
            if call is not None and call.active():
                call.cancel()
        self._closed = True
        self.game.remove_watcher(self)
        complete = self.game.write_phase_over and self._position >= self.game.visible
        silent_for = self._clock.seconds() - self._progress_at
        lost = loss_of(reason, silent_for, self._settings)
        if lost is not None:
            metrics.lost_connections.labels("reader", lost.verdict).inc()
        log.info(
            "game {game_id}: watcher {name!r} from {peer} left after {sent} bytes ({how}){loss}",
            game_id=self.game.game_id,
            name=self.name,
            peer=self.peer,
            sent=self.sent,
            how="whole replay sent" if complete else "before the end",
            loss=lost.description if lost is not None else "",
        )

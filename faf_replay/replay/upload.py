"""The upload sub-protocol: one player's game streaming its replay to us.

``ReplayProtocol`` switches into :class:`UploadProtocol` after ``P/…\\0``. It
feeds the bytes to its :class:`~faf_replay.replay.stream.UploadStream` (and so to the
spool); the game reads the stream at its next tick. Once the replay header is
in, body bytes need not be read the moment they arrive: the upload is read at
the game's ticks, so the kernel gathers the ten writes a second FA makes into
one read (the header phase stays immediate, and so does a big burst: a read
that filled the buffer means more is waiting); how, ``tick_reads`` chooses
once per connection. An upload is closed when
its replay header is invalid, when it does not complete one within
``replay_header_timeout``, or when it sends more than ``max_upload_bytes``
(what came before stays in the replay). One the merge dropped keeps its
connection (the player's game does not care) but its bytes are discarded.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from faf_replay import metrics
from faf_replay.accept.connection import ConnectionProtocol
from faf_replay.accept.keepalive import loss_of
from faf_replay.replay.game import Game
from faf_replay.replay.stream import ReplayHeaderError, UploadStream
from faf_replay.replay.tick_reads import TickReads, reads_for
from faf_replay.replay.uploads import UploadRecord
from faf_replay.settings import Settings

log = Logger()


class UploadProtocol(ConnectionProtocol):
    def __init__(
        self, game: Game, stream: UploadStream, peer: str, clock: IReactorTime, settings: Settings
    ) -> None:
        self.game = game
        self.stream = stream
        self.peer = peer
        self._clock = clock
        self._max_bytes = settings.max_upload_bytes
        self._header_timeout = settings.replay_header_timeout
        self._settings = settings
        self._header_call: IDelayedCall | None = None
        self._closed_because: str | None = None
        #: Closed by us (the game ended it, or it broke a rule): what comes now is not kept.
        self._ended = False
        #: How the upload is read once it trickles; chosen at connectionMade.
        self._reads: TickReads | None = None
        self._record: UploadRecord | None = None
        self._lost = False
        #: When the player's game last sent something (a silent one may have vanished).
        self.last_data_at = clock.seconds()

    def connectionMade(self) -> None:
        metrics.active["writer"].inc()
        self._reads = reads_for(self.connection, self.stream)
        # What the game knows of this upload; it reads it again at its tick when ``paused``.
        self._record = self.game.record(self)
        self._header_call = self._clock.callLater(self._header_timeout, self._no_header)

    def dataReceived(self, data: bytes) -> None:
        metrics.received_bytes.inc(len(data))
        self.last_data_at = self._clock.seconds()
        stream = self.stream
        if self._ended:
            if self._closed_because is None:
                stream.ignore(data)  # the game ended it: counted, as sent before its close
            return
        room = self._max_bytes - stream.received
        if len(data) > room:
            stream.feed(data[: max(room, 0)])
            self._close("too large", f"more than {self._max_bytes} bytes; the rest is not kept")
            return
        try:
            completed = stream.feed(data)
        except ReplayHeaderError as error:
            self._close("bad replay header", f"invalid replay header: {error}")
            return
        if completed:
            self._cancel_header_timeout()
            self.game.header_complete(stream)
        reads = self._reads
        if stream.header is not None and reads is not None and reads.trickled(data):
            self._wait_for_tick()

    def resume(self) -> None:
        """The game's tick: read what gathered since the last one."""
        if not self._lost and self._reads is not None and self._reads.at_tick():
            self._wait_for_tick()

    def _wait_for_tick(self) -> None:
        if self._record is not None:
            self._record.paused = True  # the game wakes it at its next tick

    def drain(self) -> None:
        """Read now whatever waits in the socket (the write phase is ending)."""
        if not self._lost and self._reads is not None:
            self._reads.drain()

    def _no_header(self) -> None:
        self._header_call = None
        if self.stream.header is None:
            self._close(
                "replay header timeout", f"no complete replay header within {self._header_timeout:g} s"
            )

    def _cancel_header_timeout(self) -> None:
        if self._header_call is not None and self._header_call.active():
            self._header_call.cancel()
        self._header_call = None

    def _close(self, reason: str, detail: str) -> None:
        self._closed_because = detail
        metrics.rejected_connections.labels(reason).inc()
        self.close()

    def close(self) -> None:
        """Take no more bytes, and close (the game calls this at its end, too)."""
        self._ended = True
        self.game.uploader_ended(self)
        self.connection.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._cancel_header_timeout()
        metrics.active["writer"].dec()
        self.game.uploader_left(self)
        stream = self.stream
        if self._closed_because is not None:
            outcome = f"closed: {self._closed_because}"
            metrics.served[metrics.BAD_DATA].inc()
        else:
            if stream.header is None:
                outcome = "ended before its replay header was complete"
            elif stream.dropped:
                outcome = "ended, diverged from the merged replay"
            else:
                outcome = "ended"
            metrics.served[metrics.SUCCESS].inc()
        silent_for = self._clock.seconds() - self.last_data_at
        lost = loss_of(reason, silent_for, self._settings)
        if lost is not None:
            metrics.lost_connections.labels("writer", lost.verdict).inc()
        log.info(
            "game {game_id}: upload {name!r} from {peer} {outcome} after {received} bytes{how}",
            game_id=self.game.game_id,
            name=stream.name,
            peer=self.peer,
            outcome=outcome,
            received=stream.received,
            how=lost.description if lost is not None else "",
        )

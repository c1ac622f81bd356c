"""The upload sub-protocol: one player's game streaming its replay to us.

``ReplayProtocol`` switches into :class:`UploadProtocol` after ``P/…\\0``. It
feeds the bytes to its :class:`~faf_replay.stream.UploadStream`; the game reads
the stream at its next tick. A stream whose replay header is invalid is closed;
one the merge dropped keeps its connection (the player's game does not care) but
its bytes are discarded.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from faf_replay import metrics
from faf_replay.game import Game
from faf_replay.stream import ReplayHeaderError, UploadStream

log = Logger()


class UploadProtocol(Protocol):
    def __init__(self, game: Game, stream: UploadStream, peer: str) -> None:
        self.game = game
        self.stream = stream
        self.peer = peer
        self._bad_header: str | None = None

    def connectionMade(self) -> None:
        metrics.active_connections.labels("writer").inc()

    def dataReceived(self, data: bytes) -> None:
        metrics.received_bytes.inc(len(data))
        try:
            completed = self.stream.feed(data)
        except ReplayHeaderError as error:
            self._bad_header = str(error)
            metrics.rejected_connections.labels("bad replay header").inc()
            self.transport.loseConnection()
            return
        if completed:
            self.game.header_complete(self.stream)

    def close(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        metrics.active_connections.labels("writer").dec()
        self.game.uploader_left(self)
        stream = self.stream
        if self._bad_header is not None:
            outcome = f"closed: invalid replay header: {self._bad_header}"
            metrics.served_connections.labels(metrics.BAD_DATA).inc()
        else:
            if stream.header is None:
                outcome = "ended before its replay header was complete"
            elif stream.dropped:
                outcome = "ended, diverged from the merged replay"
            else:
                outcome = "ended"
            metrics.served_connections.labels(metrics.SUCCESS).inc()
        log.info(
            "game {game_id}: upload {name!r} from {peer} {outcome} after {received} bytes",
            game_id=self.game.game_id,
            name=stream.name,
            peer=self.peer,
            outcome=outcome,
            received=stream.received,
        )

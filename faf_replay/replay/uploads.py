"""One upload of a game, as its game sees it.

An :class:`UploadRecord` is the one place that answers "does this upload still
count?": whether it is connected, whether it ended (no more bytes will come),
whether the merge stopped waiting for it (stalled), whether it stopped holding
the write phase open (silent), and whether its reading waits for the game's
next tick (paused). Its bytes are its :class:`~faf_replay.replay.stream.UploadStream`'s.
The game owns the records; the waiting rules (``waiting.py``) and the merge
read and set them. No Twisted here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from faf_replay.replay.stream import BodyView, UploadStream


class Uploader(Protocol):
    """The connection an upload comes over (``upload.UploadProtocol``)."""

    stream: UploadStream
    peer: str

    def close(self) -> None: ...

    def resume(self) -> None:
        """Read again: called at the tick after the upload paused itself."""

    def drain(self) -> None:
        """Read what waits in the socket now: the write phase is ending."""


class UploadRecord:
    __slots__ = (
        "connected",
        "ended",
        "heard",
        "paused",
        "quiet_since",
        "silent",
        "stalled",
        "stream",
        "uploader",
    )

    def __init__(self, stream: UploadStream, uploader: Uploader | None = None) -> None:
        self.stream = stream
        #: None: an upload a previous run spooled, found at startup.
        self.uploader = uploader
        #: Its connection is open (it may have ended all the same: closed, not yet gone).
        self.connected = uploader is not None
        #: No more bytes will come: it left, was closed, or the game ended it.
        self.ended = uploader is None
        #: The stall rule stopped waiting for it until it catches up.
        self.stalled = False
        #: Connected, but the silence rule no longer lets it hold the write phase open.
        self.silent = False
        #: Its reading waits for the game's next tick.
        self.paused = False
        #: For the silence rule: its byte count when last looked at, and since when it stood still.
        self.heard = stream.received
        self.quiet_since: float | None = None

    def __repr__(self) -> str:
        return f"<UploadRecord {self.stream.name!r}{' ended' if self.ended else ''}>"

    @property
    def name(self) -> str:
        return self.stream.name

    @property
    def received(self) -> int:
        return self.stream.received

    @property
    def body(self) -> BodyView | bytes:
        return self.stream.body

    @property
    def holding(self) -> bool:
        """Holds the write phase open: connected and not silenced."""
        return self.connected and not self.silent

    @property
    def voting(self) -> bool:
        """Worth waiting for in the merge: its header is in, and it is connected,
        not stalled, not dropped."""
        stream = self.stream
        return stream.header is not None and not self.stalled and not self.ended and not stream.dropped

    def end(self) -> None:
        """No more bytes will come from it."""
        self.ended = True

    def left(self) -> None:
        """Its connection is gone."""
        self.connected = False
        self.ended = True
        self.silent = self.paused = False


class Uploads:
    """A game's uploads: who joined, who left, and what the game asks of them all."""

    def __init__(self) -> None:
        #: Uploads the game still reads or merges (connected ones, and ended ones the merge needs).
        self.records: list[UploadRecord] = []
        self._of: dict[Uploader, UploadRecord] = {}
        #: Uploaders that joined (recovered uploads not counted).
        self.joined = 0
        #: Uploads that have left (recovered ones included).
        self.left = 0
        #: Some came from a previous run's spool.
        self.recovered = False
        #: Recovered uploads whose player has not come back (:meth:`note_returns`), by name:
        #: cut by the kill, not done, they may play on.
        self._not_back: dict[str, UploadStream] = {}
        #: Uploads compared with the recovered one of their name already (by ``id``).
        self._compared: set[int] = set()

    def add(self, uploader: Uploader) -> UploadRecord:
        self.joined += 1
        record = UploadRecord(uploader.stream, uploader)
        self._of[uploader] = record
        self.records.append(record)
        return record

    def add_recovered(self, stream: UploadStream) -> UploadRecord:
        self.recovered = True
        known = self._not_back.get(stream.name)
        if known is None or len(known.store) < len(stream.store):
            self._not_back[stream.name] = stream
        self.left += 1
        record = UploadRecord(stream)
        self.records.append(record)
        return record

    @property
    def not_back(self) -> bool:
        """Some recovered upload's player has not come back."""
        return bool(self._not_back)

    def note_returns(self) -> None:
        """Players of recovered uploads who are back: an upload under their name has sent
        again, byte for byte, all their recovered upload had. Connecting under the name is
        not enough: anyone may. Each upload is compared once, when it has sent that much."""
        if not self._not_back:
            return
        for record in self.records:
            stream = record.stream
            old = self._not_back.get(stream.name)
            if old is None or record.uploader is None or stream.dropped or id(record) in self._compared:
                continue
            size = len(old.store)
            if len(stream.store) < size:
                continue
            self._compared.add(id(record))
            if stream.store.read(0, size) == old.store.read(0, size):
                del self._not_back[stream.name]

    def record_of(self, uploader: Uploader) -> UploadRecord | None:
        return self._of.get(uploader)

    def remove(self, uploader: Uploader) -> bool:
        """The uploader's connection is gone; False if it was not one of ours (any more)."""
        record = self._of.pop(uploader, None)
        if record is None:
            return False
        record.left()
        self.left += 1
        return True

    @property
    def connected(self) -> list[UploadRecord]:
        return [record for record in self.records if record.connected]

    @property
    def connected_count(self) -> int:
        return len(self._of)

    @property
    def holding(self) -> bool:
        """Some upload holds the write phase open: connected, and not silenced."""
        return any(record.holding for record in self.records)

    def close_all(self) -> None:
        """The write phase ends: what the connected ones sent before it is read
        (it belongs in the replay), then they end and are closed; every upload's
        last bytes go to the spool's writer."""
        connected = self.connected
        for record in connected:
            record.paused = False
            if record.uploader is not None:
                record.uploader.drain()
        for record in connected:
            record.end()
            if record.uploader is not None:
                record.uploader.close()
        for record in self.records:
            record.stream.flush()

    def keep(self, still_needed: Callable[[UploadRecord], bool]) -> None:
        """Let go of ended uploads nobody needs any more, with their bytes."""
        self.records = [r for r in self.records if not r.ended or r.connected or still_needed(r)]

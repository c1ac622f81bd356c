"""One uploader's copy of the replay, as it arrives.

An :class:`UploadStream` splits the bytes after ``P/…\\0`` into the replay
header (found with :class:`~faf_replay.replay_header.ReplayHeaderScanner`) and
the body, which the merge reads. It also carries the few facts the game keeps
per uploader: whether it ended, whether the merge dropped it, and whether the
stall rule stopped waiting for it. No Twisted here.
"""

from __future__ import annotations

from faf_replay.replay_header import ReplayHeaderError, ReplayHeaderScanner

__all__ = ["ReplayHeaderError", "UploadStream"]


class UploadStream:
    __slots__ = (
        "_sampled",
        "_scanner",
        "body",
        "dropped",
        "ended",
        "header",
        "name",
        "received",
        "silent_for",
        "stalled",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.header: bytes | None = None
        self.body = bytearray()
        #: Every byte this uploader sent, kept or not.
        self.received = 0
        self.ended = False
        #: The merge found it diverging: its data is discarded from then on.
        self.dropped = False
        #: Held the merge back for the stall timeout: not waited for.
        self.stalled = False
        self._scanner: ReplayHeaderScanner | None = ReplayHeaderScanner()

    def feed(self, data: bytes) -> bool:
        """Take bytes from the uploader; True when they completed the header.

        Raises :class:`ReplayHeaderError` when the header is invalid; the
        stream has then ended.
        """
        self.received += len(data)
        if self.ended or self.dropped:
            return False
        scanner = self._scanner
        if scanner is None:
            self.body += data
            return False
        try:
            length = scanner.feed(data)
        except ReplayHeaderError:
            self.ended = True
            self._scanner = None
            raise
        if length is None:
            return False
        buffer = scanner.buffer
        self.header = bytes(buffer[:length])
        del buffer[:length]
        self.body = buffer
        self._scanner = None
        return True

    def drop(self) -> None:
        """Discard everything, now and later: the merge found it diverging."""
        self.dropped = True
        self.body = bytearray()

    @property
    def voting(self) -> bool:
        """Worth waiting for: a stream that never completed its header is not."""
        return self.header is not None and not self.stalled and not self.ended and not self.dropped

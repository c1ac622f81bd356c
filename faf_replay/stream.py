"""One uploader's copy of the replay, as it arrives.

An :class:`UploadStream` splits the bytes after ``P/…\\0`` into the replay
header (found with :class:`~faf_replay.replay_header.ReplayHeaderScanner`) and
the body, which the merge reads. With a spool file every byte goes to disk as it
arrives and the body is read back from there (:class:`SpooledBody`), so memory
does not grow with the game; without one (or once the disk refuses) the body
lives in memory. The stream also carries the few facts the game keeps per
uploader: whether it ended, whether the merge dropped it, and whether the stall
rule stopped waiting for it. No Twisted here.
"""

from __future__ import annotations

from collections.abc import Callable

from faf_replay.replay_header import MAX_HEADER_SIZE, ReplayHeaderError, ReplayHeaderScanner
from faf_replay.spool import SpoolFile

__all__ = ["ReplayHeaderError", "SpooledBody", "UploadStream"]


class SpooledBody:
    """A body whose bytes are in a spool file from ``offset`` on, plus whatever
    the disk refused, kept in memory. Reads like ``bytes``: ``len``, slices, indexes."""

    __slots__ = ("_file", "_offset", "_on_disk", "tail")

    def __init__(self, file: SpoolFile, offset: int) -> None:
        self._file = file
        self._offset = offset
        self._on_disk: int | None = None  # frozen when the disk fails
        self.tail = bytearray()

    def freeze_disk(self) -> None:
        """The file stops growing here; later bytes go to :attr:`tail`."""
        self._on_disk = self._disk_length()

    def _disk_length(self) -> int:
        if self._on_disk is not None:
            return self._on_disk
        return self._file.size - self._offset

    def __len__(self) -> int:
        return self._disk_length() + len(self.tail)

    def __getitem__(self, key: int | slice) -> bytes | int:
        if isinstance(key, int):
            index = key + len(self) if key < 0 else key
            if not 0 <= index < len(self):
                raise IndexError(key)
            return self._read(index, index + 1)[0]
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("no steps")
        return self._read(start, stop)

    def _read(self, start: int, stop: int) -> bytes:
        if stop <= start:
            return b""
        disk = self._disk_length()
        data = self._file.read(self._offset + start, min(stop, disk) - start) if start < disk else b""
        if stop > disk:
            data += bytes(self.tail[max(start, disk) - disk : stop - disk])
        return data


class UploadStream:
    __slots__ = (
        "_file",
        "_on_spool_error",
        "_scanner",
        "body",
        "dropped",
        "ended",
        "header",
        "name",
        "received",
        "stalled",
    )

    def __init__(
        self,
        name: str,
        file: SpoolFile | None = None,
        on_spool_error: Callable[[OSError], None] | None = None,
    ) -> None:
        self.name = name
        self.header: bytes | None = None
        self.body: bytearray | SpooledBody = bytearray()
        #: Every byte this uploader sent, kept or not.
        self.received = 0
        self.ended = False
        #: The merge found it diverging: its data is discarded from then on.
        self.dropped = False
        #: Held the merge back for the stall timeout: not waited for.
        self.stalled = False
        self._file = file
        self._on_spool_error = on_spool_error
        self._scanner: ReplayHeaderScanner | None = ReplayHeaderScanner()

    @classmethod
    def recovered(cls, name: str, file: SpoolFile) -> UploadStream:
        """A stream read back from a spool file a previous run wrote; it has ended."""
        stream = cls(name, file)
        stream.received = file.size
        stream.ended = True
        try:
            if stream._scanner is not None and stream._scanner.feed(
                file.read(0, min(file.size, MAX_HEADER_SIZE))
            ):
                stream._header_done(stream._scanner)
        except ReplayHeaderError:
            pass
        stream._scanner = None
        return stream

    def feed(self, data: bytes) -> bool:
        """Take bytes from the uploader; True when they completed the header.

        Raises :class:`ReplayHeaderError` when the header is invalid; the
        stream has then ended.
        """
        self.received += len(data)
        if self.ended or self.dropped:
            return False
        self._store(data)
        scanner = self._scanner
        if scanner is None:
            return False
        try:
            length = scanner.feed(data)
        except ReplayHeaderError:
            self.ended = True
            self._scanner = None
            raise
        if length is None:
            return False
        self._header_done(scanner)
        return True

    def _store(self, data: bytes) -> None:
        body = self.body
        if self._file is None:
            if self._scanner is None:
                assert isinstance(body, bytearray)
                body += data
            return
        if isinstance(body, SpooledBody) and body.tail:
            body.tail += data  # the disk failed earlier: memory from then on
            return
        try:
            self._file.append(data)
        except OSError as error:
            self._spool_failed(error, data)

    def _spool_failed(self, error: OSError, data: bytes) -> None:
        if self._scanner is not None:
            # Still in the header: the scanner has every byte; keep the stream in memory.
            self._file = None
        else:
            assert isinstance(self.body, SpooledBody)
            self.body.freeze_disk()
            self.body.tail += data
        if self._on_spool_error is not None:
            self._on_spool_error(error)

    def _header_done(self, scanner: ReplayHeaderScanner) -> None:
        length = scanner.length
        assert length is not None
        self.header = bytes(scanner.buffer[:length])
        if self._file is not None:
            self.body = SpooledBody(self._file, length)
        else:
            del scanner.buffer[:length]
            self.body = scanner.buffer
        self._scanner = None

    def drop(self) -> None:
        """Discard everything, now and later: the merge found it diverging."""
        self.dropped = True
        self.body = bytearray()

    @property
    def voting(self) -> bool:
        """Worth waiting for: a stream that never completed its header is not."""
        return self.header is not None and not self.stalled and not self.ended and not self.dropped

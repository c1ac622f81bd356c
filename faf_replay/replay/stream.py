"""One uploader's copy of the replay, as it arrives.

Everything an uploader sends after ``P/…\\0`` goes into its :class:`RawStore`:
newest bytes in memory, handed to the spool's writer every ``--spool-sync``
seconds (sooner when many wait) and dropped from memory once they are on
disk, so that memory does not grow with the game and the reactor never waits
for the disk. :class:`UploadStream` finds the end
of the replay header in those bytes (with
:class:`~faf_replay.replay.replay_header.ReplayHeaderScanner`) and offers the body as
a bytes-like view the merge reads. Without a spool file (or once the disk
refuses) everything stays in memory. Whether the merge dropped it (found it
diverging) is the stream's to know, since its bytes go with it; what the game
knows of an upload besides is on its record (``uploads.UploadRecord``). No
Twisted here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, overload

from faf_replay.replay.replay_header import MAX_HEADER_SIZE, ReplayHeaderError, ReplayHeaderScanner
from faf_replay.spool.files import Done, SpoolFile

__all__ = ["BodyView", "RawStore", "ReplayHeaderError", "UploadStream"]


#: Bytes of an upload that go to the spool's writer without waiting for the interval.
WRITE_AT = 64 * 1024
#: Seconds after the spool refused an upload's bytes (a full disk) before they are offered to
#: it again: a disk that has room again makes the upload durable again.
RESUME_AFTER = 5.0


class RawStore:
    """The bytes of one upload: on disk up to :attr:`on_disk`, the rest in memory.

    New bytes go to the spool's writer every ``interval`` seconds, or sooner
    once :data:`WRITE_AT` bytes wait: few, large appends, and never more in
    memory than that interval's worth. Reads may come from another thread
    (saving), so reads and the writer's confirmations take a lock; appends only
    ever add to the end.

    When the disk refuses a write, the bytes stay in memory, and every
    :data:`RESUME_AFTER` seconds (and at the last flush) everything not on disk
    is offered to the file again (``resume``): once the disk has room, the
    upload is durable again.
    """

    __slots__ = (
        "_failed_at",
        "_lock",
        "_on_error",
        "_on_resumed",
        "_resume",
        "_resuming",
        "_sent_at",
        "_write",
        "failed",
        "file",
        "interval",
        "on_disk",
        "submitted",
        "tail",
    )

    def __init__(
        self,
        file: SpoolFile | None = None,
        write: Callable[[SpoolFile, bytes, Done], None] | None = None,
        *,
        on_error: Callable[[OSError], None] | None = None,
        interval: float = 0.0,
        resume: Callable[[SpoolFile, int, bytes, Done], None] | None = None,
        on_resumed: Callable[[int], None] | None = None,
    ) -> None:
        self.file = file
        self._write = write
        self._on_error = on_error
        self._resume = resume
        self._on_resumed = on_resumed
        self._failed_at: float | None = None
        self._resuming = False
        self.interval = interval
        self._sent_at = float("-inf")
        self.on_disk = file.size if file is not None else 0
        self.submitted = self.on_disk
        self.tail = bytearray()
        self.failed = file is None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.on_disk + len(self.tail)

    def append(self, data: bytes) -> None:
        self.tail += data

    def flush(self, now: float | None = None) -> None:
        """Hand what is new to the spool's writer: when due at ``now``, or at
        once without it."""
        if self.failed:
            self._offer_again(now)
            return
        waiting = len(self) - self.submitted
        if self._write is None or waiting <= 0:
            return
        if now is not None:
            if waiting < WRITE_AT and now - self._sent_at < self.interval:
                return
            self._sent_at = now
        data = bytes(self.tail[self.submitted - self.on_disk :])
        self.submitted = len(self)
        assert self.file is not None
        self._write(self.file, data, self._written)

    def _offer_again(self, now: float | None) -> None:
        """The disk refused: every :data:`RESUME_AFTER` seconds (at once without ``now``),
        everything not on disk goes to the file again."""
        if self.file is None or self._resume is None or self._resuming:
            return
        if now is not None:
            if self._failed_at is None:
                self._failed_at = now
            if now - self._failed_at < RESUME_AFTER:
                return
        self._failed_at = None
        self._resuming = True
        self.submitted = len(self)
        self._resume(self.file, self.on_disk, bytes(self.tail), self._resumed)

    def _resumed(self, result: Any) -> None:
        # The writer runs jobs in order: every write handed over before this one has been
        # answered (refused: the file was broken) before this answer comes.
        self._resuming = False
        if isinstance(result, Exception):
            return  # still refused: offered again later
        with self._lock:
            assert self.file is not None
            taken = result - self.on_disk
            self.on_disk = self.file.size = result
            del self.tail[:taken]
        self.failed = False
        if self._on_resumed is not None:
            self._on_resumed(result)

    def _written(self, result: Any) -> None:
        if isinstance(result, Exception):
            if not self.failed:
                self.failed = True  # from now on the bytes stay in memory
                if self._on_error is not None:
                    self._on_error(result if isinstance(result, OSError) else OSError(str(result)))
            return
        if self.failed:
            return  # written before the failure or the drop; memory has these bytes still
        with self._lock:
            assert self.file is not None
            self.on_disk += result
            self.file.size += result
            del self.tail[:result]

    def read(self, start: int, stop: int) -> bytes:
        with self._lock:
            disk = self.on_disk
            data = b""
            if start < disk:
                assert self.file is not None
                data = self.file.read(start, min(stop, disk) - start)
            if stop > disk:
                data += bytes(self.tail[max(start, disk) - disk : stop - disk])
            return data


class BodyView:
    """The body of an upload (its bytes after the replay header), read like ``bytes``."""

    __slots__ = ("_offset", "_store")

    def __init__(self, store: RawStore, offset: int) -> None:
        self._store = store
        self._offset = offset

    def __len__(self) -> int:
        return len(self._store) - self._offset

    @overload
    def __getitem__(self, key: int) -> int: ...

    @overload
    def __getitem__(self, key: slice) -> bytes: ...

    def __getitem__(self, key: int | slice) -> bytes | int:
        if isinstance(key, int):
            index = key + len(self) if key < 0 else key
            if not 0 <= index < len(self):
                raise IndexError(key)
            return self._store.read(self._offset + index, self._offset + index + 1)[0]
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("no steps")
        if stop <= start:
            return b""
        return self._store.read(self._offset + start, self._offset + stop)


class UploadStream:
    __slots__ = (
        "_scanner",
        "body",
        "dropped",
        "header",
        "name",
        "received",
        "store",
    )

    def __init__(self, name: str, store: RawStore | None = None) -> None:
        self.name = name
        self.store = store if store is not None else RawStore()
        self.header: bytes | None = None
        self.body: BodyView | bytes = b""
        #: Every byte this uploader sent, kept or not.
        self.received = 0
        #: The merge found it diverging: its data is discarded from then on.
        self.dropped = False
        self._scanner: ReplayHeaderScanner | None = ReplayHeaderScanner()

    @classmethod
    def recovered(cls, name: str, file: SpoolFile) -> UploadStream:
        """A stream read back from a spool file a previous run wrote."""
        stream = cls(name, RawStore(file))
        stream.received = file.size
        scanner = stream._scanner
        assert scanner is not None
        try:
            if scanner.feed(stream.store.read(0, min(file.size, MAX_HEADER_SIZE))) is not None:
                stream._header_done(scanner)
        except ReplayHeaderError:
            pass
        stream._scanner = None
        return stream

    def feed(self, data: bytes) -> bool:
        """Take bytes from the uploader; True when they completed the header.

        Raises :class:`ReplayHeaderError` when the header is invalid; the
        upload must then end (it takes no more bytes).
        """
        self.received += len(data)
        if self.dropped:
            return False
        self.store.append(data)
        scanner = self._scanner
        if scanner is None:
            return False
        try:
            length = scanner.feed(data)
        except ReplayHeaderError:
            self._scanner = None
            raise
        if length is None:
            return False
        self._header_done(scanner)
        return True

    def _header_done(self, scanner: ReplayHeaderScanner) -> None:
        length = scanner.length
        assert length is not None
        self.header = bytes(scanner.buffer[:length])
        self.body = BodyView(self.store, length)
        self._scanner = None  # and its copy of the bytes with it

    @property
    def body_on_disk(self) -> int | None:
        """Body bytes in its spool file, which a kill -9 cannot take back; None for an
        upload kept in memory only (no spool file)."""
        if self.store.file is None:
            return None
        if self.header is None:
            return 0
        return max(0, self.store.on_disk - len(self.header))

    def ignore(self, data: bytes) -> None:
        """Bytes that came after the upload ended: counted, not kept."""
        self.received += len(data)

    def flush(self, now: float | None = None) -> None:
        """Hand new bytes to the spool's writer (see :meth:`RawStore.flush`)."""
        if not self.dropped:
            self.store.flush(now)

    def drop(self) -> None:
        """Discard everything, now and later: the merge found it diverging."""
        self.dropped = True
        self.body = b""
        self.store.tail = bytearray()
        self.store.failed = True

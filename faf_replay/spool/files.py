"""One upload's file in the spool, and the ration of open descriptors.

A :class:`SpoolFile` holds one uploader's raw bytes: the writer thread
creates and appends it, the game reads it back by position. Tens of thousands
of uploads must not take as many file descriptors from the connections:
:class:`Descriptors` lets at most a set number be open at once, the least
recently used giving theirs up. ``spool.py`` holds the folders these files
live in. No Twisted here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: ``done(result)``: the number of bytes written, or the exception.
Done = Callable[[Any], None]


def default_open_files() -> int:
    """A quarter of the process's open-file limit: the rest is for connections."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft // 4) if soft != resource.RLIM_INFINITY else 65536


class Descriptors:
    """The spool files holding an open descriptor, at most ``limit`` of them.

    A file asks for a descriptor each time it is used (:meth:`SpoolFile.write`,
    :meth:`SpoolFile.read`, holding its own lock); past the limit the least
    recently used file closes its descriptor, and opens it again when next
    used. A file busy in another thread is skipped, never waited for, so the
    reactor and the writer cannot deadlock here.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = max(1, limit if limit is not None else default_open_files())
        self._lock = threading.Lock()
        self._open: OrderedDict[SpoolFile, None] = OrderedDict()
        #: Descriptors closed to stay under the limit (for the tests and tools).
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._open)

    def used(self, file: SpoolFile) -> None:
        """``file`` (its lock held) has a descriptor and was just used."""
        with self._lock:
            self._open[file] = None
            self._open.move_to_end(file)
            victims = []
            while len(self._open) > self.limit:
                victim, _ = self._open.popitem(last=False)
                victims.append(victim)
        for victim in victims:
            if victim._lock.acquire(blocking=False):
                try:
                    victim._close_descriptor()
                    self.evictions += 1
                finally:
                    victim._lock.release()
            # else: in use right now; it keeps its descriptor and registers
            # again when next used

    def forget(self, file: SpoolFile) -> None:
        with self._lock:
            self._open.pop(file, None)


class SpoolFile:
    """One upload's file: created and appended by the writer, read back by position.

    The file starts with its ``prefix`` (the uploader's name and a NUL);
    offsets and :attr:`size` count the bytes after it. :attr:`size` is what the
    owner knows to be on disk (it confirms each write); reads stay below it.
    With ``descriptors``, the file's descriptor is opened when it is used and
    may be closed between uses (:class:`Descriptors`).
    """

    __slots__ = (
        "_created",
        "_descriptors",
        "_lock",
        "_written",
        "broken",
        "closed",
        "fd",
        "path",
        "prefix",
        "size",
    )

    def __init__(self, path: Path, prefix: bytes = b"", descriptors: Descriptors | None = None) -> None:
        self.path = path
        self.prefix = prefix
        self._descriptors = descriptors
        self._created = False
        self.fd: int | None = None
        self.size = 0
        self._written = 0  # the writer's own count
        self.closed = False
        #: A write failed: the file keeps what it had and takes nothing more, so
        #: that what is in it stays a prefix of the upload.
        self.broken = False
        self._lock = threading.Lock()

    @classmethod
    def existing(cls, path: Path, descriptors: Descriptors | None = None) -> SpoolFile:
        """A file a previous run wrote, its name read back."""
        with path.open("rb") as raw:
            head = raw.read(2048)
            size = os.fstat(raw.fileno()).st_size
        name, nul, _ = head.partition(b"\0")
        file = cls(path, name + nul if nul else b"", descriptors)
        file._created = True
        file.size = file._written = size - len(file.prefix)
        if descriptors is None:
            file.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        return file

    @property
    def name(self) -> str:
        return self.prefix.rstrip(b"\0").decode("utf-8", "replace")

    def write(self, data: bytes) -> int:
        """The writer: append all of ``data`` (creating the file first), or none
        of it: raises OSError (disk full, …) with the file as it was, and
        refuses every later write."""
        with self._lock:
            if self.closed or self.broken:
                raise OSError(errno.EBADF, "the spool file takes no more writes")
            view, done = memoryview(data), 0
            try:
                # Inside the try: a file the disk would not create, or a descriptor
                # not to be had, refuses the writes queued behind this one too, or
                # the next would land where these bytes belong.
                if not self._created:
                    self._create()
                fd = self._descriptor()
                while done < len(view):
                    done += os.write(fd, view[done:])
            except OSError:
                self.broken = True
                if done:
                    os.ftruncate(fd, len(self.prefix) + self._written)
                raise
            finally:
                self._used()
            self._written += done
            return done

    def _create(self) -> None:
        """The file, with the upload's name and its NUL first; or, when the disk refuses
        them, no file at all (a later write tries again): a file without its name would be
        read back with its bytes shifted."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o644)
        try:
            done = 0
            while done < len(self.prefix):
                done += os.write(fd, self.prefix[done:])
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        self.fd = fd
        self._created = True

    def rewrite_from(self, offset: int, data: bytes) -> int:
        """The writer, once the disk refused a write: take writes again, appending what
        ``data`` (the upload's bytes from ``offset`` on) holds beyond what the file has.
        Returns the upload bytes the file holds; raises like :meth:`write` (the file then
        refuses writes again)."""
        with self._lock:
            if self.closed:
                raise OSError(errno.EBADF, "the spool file is closed")
            self.broken = False
        skip = self._written - offset
        if skip < 0:  # a gap: the file must stay a prefix of the upload
            self.broken = True
            raise OSError(errno.EINVAL, f"{self.path} holds {self._written} bytes, not {offset}")
        if skip < len(data):
            self.write(data[skip:])
        return self._written

    def read(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        assert self._created and offset + length <= self.size
        with self._lock:
            if self.closed:
                raise OSError(errno.EBADF, f"{self.path} is closed")
            try:
                data = os.pread(self._descriptor(), length, len(self.prefix) + offset)
            finally:
                self._used()
        if len(data) != length:  # pread of a regular file only stops at its end
            raise OSError(f"{self.path}: {len(data)} of {length} bytes at {offset}")
        return data

    def close(self) -> None:
        """The writer, once nothing more is written or read."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self._close_descriptor()
                if self._descriptors is not None:
                    self._descriptors.forget(self)

    def _descriptor(self) -> int:
        """The open descriptor (the lock held), opened again if it was given up."""
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        return self.fd

    def _used(self) -> None:
        if self._descriptors is not None and self.fd is not None:
            self._descriptors.used(self)

    def _close_descriptor(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

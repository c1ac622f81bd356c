"""The spool: every upload on disk as it arrives, so that a crash loses nothing.

::

    <spool>/games/<game_id>/record.json   game id and start time
    <spool>/games/<game_id>/<n>.upload    uploader n's name, a NUL, then the raw
                                          bytes it sent after P/…\\0

A game's folder is removed once its replay is saved (renamed into
``<spool>/trash`` at once, deleted off the reactor thread); nothing else
removes it. After a crash, :meth:`Spool.recover` finds the games left behind.
Files are appended in the reactor thread (small writes to the page cache) and
made durable every few seconds in a worker thread (:meth:`Spool.sync`: one
``syncfs`` for the whole spool where Linux has it), which bounds what a power
loss can take. No Twisted here.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_UPLOAD_SUFFIX = ".upload"


class SpoolFile:
    """One upload's bytes: appended by the reactor, read back by position.

    A file may start with a ``prefix`` (an upload's name and a NUL); offsets and
    :attr:`size` count the bytes after it.
    """

    __slots__ = ("_lock", "closed", "dirty", "fd", "path", "size", "start")

    def __init__(self, path: Path, *, create: bool, prefix: bytes = b"") -> None:
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        self.path = path
        self.fd = os.open(path, flags, 0o644)
        if create and prefix:
            os.write(self.fd, prefix)
        self.start = len(prefix)
        self.size = os.fstat(self.fd).st_size - self.start
        self.closed = False
        self.dirty = create
        self._lock = threading.Lock()

    def append(self, data: bytes | memoryview) -> None:
        """Write all of ``data`` at the end, or none of it: raises OSError (disk
        full, …) with the file as it was."""
        view = memoryview(data)
        before = self.size
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
                self.size += written
        except OSError:
            if self.size != before:
                os.ftruncate(self.fd, self.start + before)
                self.size = before
            raise
        self.dirty = True

    def read(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        data = os.pread(self.fd, length, self.start + offset)
        if len(data) != length:  # pread of a regular file only stops at its end
            raise OSError(f"{self.path}: {len(data)} of {length} bytes at {offset}")
        return data

    def sync(self) -> None:
        """fsync if written since the last sync; safe from another thread."""
        with self._lock:
            if self.closed or not self.dirty:
                return
            self.dirty = False
            os.fsync(self.fd)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                os.close(self.fd)


@dataclass
class RecoveredUpload:
    number: int
    name: str
    file: SpoolFile


@dataclass
class RecoveredGame:
    game_id: int
    started_at: float
    spool: GameSpool
    uploads: list[RecoveredUpload] = field(default_factory=list)


class GameSpool:
    """One game's folder in the spool."""

    def __init__(self, spool: Spool, game_id: int, started_at: float, *, create: bool) -> None:
        self.game_id = game_id
        self.started_at = started_at
        self.directory = spool.games / str(game_id)
        self._spool = spool
        self._next = 1
        self.files: list[SpoolFile] = []
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write_record()
        else:
            self._read_record()

    def new_upload(self, name: str) -> SpoolFile:
        path = self.directory / f"{self._next}{_UPLOAD_SUFFIX}"
        self._next += 1
        file = SpoolFile(path, create=True, prefix=name.encode("utf-8", "replace") + b"\0")
        self.files.append(file)
        return file

    def recovered_uploads(self) -> list[RecoveredUpload]:
        uploads = []
        for path in sorted(self.directory.glob(f"*{_UPLOAD_SUFFIX}"), key=lambda p: (len(p.stem), p.stem)):
            if not path.stem.isdigit():
                continue
            with path.open("rb") as raw:
                head = raw.read(2048)
            name, nul, _ = head.partition(b"\0")
            prefix = name + nul if nul else b""
            file = SpoolFile(path, create=False, prefix=prefix)
            self.files.append(file)
            self._next = max(self._next, int(path.stem) + 1)
            uploads.append(RecoveredUpload(int(path.stem), name.decode("utf-8", "replace"), file))
        return uploads

    def close(self) -> None:
        for file in self.files:
            file.close()

    def remove(self) -> None:
        """The replay is saved: the spool has nothing more to keep for it.

        The folder leaves ``games/`` at once (one rename); deleting its files
        is the spool's ``discard``, which may run in another thread."""
        self.close()
        self._spool.forget(self)
        trash = self._spool.trash / f"{self.game_id}.{uuid.uuid4().hex}"
        try:
            os.rename(self.directory, trash)
        except OSError:
            shutil.rmtree(self.directory, ignore_errors=True)
            return
        self._spool.discard(trash)

    def _write_record(self) -> None:
        record = {"game_id": self.game_id, "started_at": self.started_at}
        fd, temporary = tempfile.mkstemp(prefix=".record.", dir=self.directory)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(record, file)
        os.replace(temporary, self.directory / "record.json")

    def _read_record(self) -> None:
        try:
            record: Any = json.loads((self.directory / "record.json").read_text(encoding="utf-8"))
            self.started_at = float(record.get("started_at", self.started_at))
        except (OSError, ValueError, TypeError, AttributeError):
            pass  # the start time falls back to the folder's age


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Spool:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.games = self.directory / "games"
        self.trash = self.directory / "trash"
        self.games.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.trash, ignore_errors=True)  # what a previous run was deleting
        self.trash.mkdir(exist_ok=True)
        self._open: dict[int, GameSpool] = {}
        #: Deletes a saved game's folder (moved to ``trash``); the server runs it in a thread.
        self.discard: Callable[[Path], None] = _remove_tree

    def game(self, game_id: int, started_at: float) -> GameSpool:
        game = GameSpool(self, game_id, started_at, create=True)
        self._open[id(game)] = game
        return game

    def recover(self) -> list[RecoveredGame]:
        """The games a previous run left behind, oldest first, their files open."""
        recovered = []
        for directory in self.games.iterdir():
            if not (directory.is_dir() and directory.name.isdigit()):
                continue
            game = GameSpool(self, int(directory.name), directory.stat().st_mtime, create=False)
            self._open[id(game)] = game
            recovered.append(RecoveredGame(game.game_id, game.started_at, game, game.recovered_uploads()))
        return sorted(recovered, key=lambda g: g.started_at)

    def forget(self, game: GameSpool) -> None:
        self._open.pop(id(game), None)

    def dirty_files(self) -> list[SpoolFile]:
        """Files written since their last sync; collect them in the reactor thread."""
        return [file for game in self._open.values() for file in game.files if file.dirty and not file.closed]

    def sync(self, files: list[SpoolFile]) -> int:
        """Make ``files`` durable (run it in a worker thread): one ``syncfs`` of
        the spool's filesystem where there is one, else an fsync per file."""
        if not files:
            return 0
        if _syncfs is None:
            for file in files:
                file.sync()
            return len(files)
        for file in files:
            file.dirty = False  # written again from now on: dirty again, synced next time
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            if _syncfs(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error))
        finally:
            os.close(fd)
        return len(files)


def _find_syncfs() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    return function


_syncfs = _find_syncfs()

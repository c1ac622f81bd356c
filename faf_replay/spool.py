"""The spool: every upload on disk as it arrives, so that a crash loses nothing.

::

    <spool>/games/<game_id>/record.json   game id, start time, uploader names
    <spool>/games/<game_id>/<n>.upload    the raw bytes uploader n sent after P/…\\0

A game's folder is removed once its replay is saved; nothing else removes
it. After a crash, :meth:`Spool.recover` finds the games left behind. Files are
appended in the reactor thread (small writes to the page cache) and fsynced
every few seconds in a worker thread (:func:`sync_files`), which bounds what a
power loss can take. No Twisted here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_UPLOAD_SUFFIX = ".upload"


class SpoolFile:
    """One upload's bytes: appended by the reactor, read back by position."""

    __slots__ = ("_lock", "closed", "dirty", "fd", "path", "size")

    def __init__(self, path: Path, *, create: bool) -> None:
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        self.path = path
        self.fd = os.open(path, flags, 0o644)
        self.size = os.fstat(self.fd).st_size
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
                os.ftruncate(self.fd, before)
                self.size = before
            raise
        self.dirty = True

    def read(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        data = os.pread(self.fd, length, offset)
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
        self._names: dict[str, str] = {}
        self.files: list[SpoolFile] = []
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write_record()
        else:
            self._read_record()

    def new_upload(self, name: str) -> SpoolFile:
        numbers = [int(p.stem) for p in self.directory.glob(f"*{_UPLOAD_SUFFIX}") if p.stem.isdigit()]
        number = max(numbers, default=0) + 1
        file = SpoolFile(self.directory / f"{number}{_UPLOAD_SUFFIX}", create=True)
        self.files.append(file)
        self._names[str(number)] = name
        self._write_record()
        return file

    def recovered_uploads(self) -> list[RecoveredUpload]:
        uploads = []
        for path in sorted(self.directory.glob(f"*{_UPLOAD_SUFFIX}"), key=lambda p: (len(p.stem), p.stem)):
            if not path.stem.isdigit():
                continue
            file = SpoolFile(path, create=False)
            self.files.append(file)
            uploads.append(
                RecoveredUpload(int(path.stem), self._names.get(path.stem, f"upload {path.stem}"), file)
            )
        return uploads

    def close(self) -> None:
        for file in self.files:
            file.close()

    def remove(self) -> None:
        """The replay is saved: the spool has nothing more to keep for it."""
        self.close()
        self._spool.forget(self)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _write_record(self) -> None:
        record = {"game_id": self.game_id, "started_at": self.started_at, "uploads": self._names}
        fd, temporary = tempfile.mkstemp(prefix=".record.", dir=self.directory)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(record, file)
        os.replace(temporary, self.directory / "record.json")

    def _read_record(self) -> None:
        try:
            record: Any = json.loads((self.directory / "record.json").read_text(encoding="utf-8"))
            self.started_at = float(record.get("started_at", self.started_at))
            self._names = {str(k): str(v) for k, v in dict(record.get("uploads", {})).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            pass  # names are for logs; the start time falls back to the folder's age


class Spool:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.games = self.directory / "games"
        self.games.mkdir(parents=True, exist_ok=True)
        self._open: dict[int, GameSpool] = {}

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
        """Files written since their last fsync; collect them in the reactor thread."""
        return [file for game in self._open.values() for file in game.files if file.dirty and not file.closed]


def sync_files(files: list[SpoolFile]) -> int:
    """fsync ``files`` (run it in a worker thread); a file closed meanwhile is skipped."""
    for file in files:
        file.sync()
    return len(files)

"""The spool: every upload on disk as it arrives, so that a crash loses nothing.

::

    <spool>/games/<game_id>/record.json   game id, start time, failed saves
    <spool>/games/<game_id>/<n>.upload    uploader n's name, a NUL, then the raw
                                          bytes it sent after P/…\\0
    <spool>/quarantine/<game_id>-<time>/  a game whose save failed by its data,
                                          moved here whole, with why.txt

All spool I/O (creating folders and files, appending, syncing, removing) is
work for the spool's one writer, a single thread in the server: the reactor
never waits for the disk, and the writer's jobs run in the order they were
handed over. Uploads keep their newest bytes in memory until the writer has
them on disk (``stream.RawStore``). A game's folder is removed once its replay
is saved; nothing else removes it. After a crash, :meth:`Spool.recover` finds
the games left behind. :meth:`Spool.sync` makes everything written durable
(one ``syncfs`` where Linux has it), which bounds what a power loss can take.
The writer removes a folder by renaming it into ``<spool>/trash``; a thread of
its own deletes it there (:class:`Emptier`).

Appends are queued (:meth:`Spool.write`) and handed over in batches, one job
per batch (:meth:`Spool.send`, after every tick of a group of games), so the
cost of crossing to the thread is paid a few times a second, not per upload.
Descriptors are rationed (``spool_files.Descriptors``): at most a set number
of upload files are open at once, the least recently used giving theirs up, so
that a server holding tens of thousands of uploads keeps its file descriptors
for the connections.
No Twisted here: ``submit`` is how the server hands jobs to its thread.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faf_replay.save.best_effort import guarded
from faf_replay.spool.files import Descriptors, Done, SpoolFile

_UPLOAD_SUFFIX = ".upload"

#: ``submit(job, done)``: run ``job()`` in the writer, then ``done(result)`` (an
#: exception when the job raised) where the caller lives.
Submit = Callable[[Callable[[], Any], Callable[[Any], None]], None]


def run_now(job: Callable[[], Any], done: Callable[[Any], None]) -> None:
    """A writer with no thread: the job runs at once (tools and tests)."""
    try:
        result = job()
    except Exception as error:
        result = error
    done(result)


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
    #: Why its files could not be read back, if they could not.
    problem: str | None = None


class GameSpool:
    """One game's folder in the spool."""

    def __init__(self, spool: Spool, game_id: int, started_at: float, *, create: bool) -> None:
        self.game_id = game_id
        self.started_at = started_at
        self.directory = spool.games / str(game_id)
        self.spool = spool
        self._next = 1
        self.files: list[SpoolFile] = []
        #: Saves that failed by the data itself; kept in record.json across restarts.
        self.broken_saves = 0
        #: Where its folder went when it was put in quarantine.
        self.quarantined: Path | None = None
        if create:
            spool.submit(self._create, spool.report)
        else:
            self._read_record()

    def new_upload(self, name: str) -> SpoolFile:
        """A file for one more uploader; the writer creates it with its first bytes."""
        path = self.directory / f"{self._next}{_UPLOAD_SUFFIX}"
        self._next += 1
        prefix = name.encode("utf-8", "replace").replace(b"\0", b"") + b"\0"
        file = SpoolFile(path, prefix, self.spool.descriptors)
        self.files.append(file)
        return file

    def recovered_uploads(self) -> list[RecoveredUpload]:
        uploads = []
        for path in sorted(self.directory.glob(f"*{_UPLOAD_SUFFIX}"), key=lambda p: (len(p.stem), p.stem)):
            if not path.stem.isdigit():
                continue
            file = SpoolFile.existing(path, self.spool.descriptors)
            self.files.append(file)
            self._next = max(self._next, int(path.stem) + 1)
            uploads.append(RecoveredUpload(int(path.stem), file.name, file))
        return uploads

    def close(self) -> None:
        """Close the files (the writer does it, after what it still has to write)."""
        files = list(self.files)

        def close_all() -> None:
            for file in files:
                file.close()

        self.spool.submit(close_all, self.spool.report)

    def remove(self) -> None:
        """The replay is saved: the spool has nothing more to keep for it.

        The writer closes the files, moves the folder out of ``games/`` and
        deletes it, after whatever it still had to write there."""
        self.spool.forget(self)
        if self.quarantined is None:
            self.spool.submit(self._remove, self.spool.report)

    def note_broken(self, why: str) -> None:
        """One more save failed by the data itself (remembered across restarts)."""
        self.broken_saves += 1
        record = self._record(broken_saves=self.broken_saves, last_error=why)
        self.spool.submit(lambda: self._write_record(record), self.spool.report)

    def quarantine(self, why: str, now: float) -> Path:
        """Keep the uploads out of the way: ``<spool>/quarantine/<id>-<UTC time>/``
        with ``why.txt``. Nothing is deleted; no later start recovers it."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        self.quarantined = target = self.spool.quarantine / f"{self.game_id}-{stamp}"
        self.spool.forget(self)
        self.spool.submit(lambda: self._quarantine(target, why), self.spool.report)
        return target

    def _record(self, **more: Any) -> dict[str, Any]:
        return {"game_id": self.game_id, "started_at": self.started_at, **more}

    def _create(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_record(self._record())

    def _write_record(self, record: dict[str, Any]) -> None:
        fd, temporary = tempfile.mkstemp(prefix=".record.", dir=self.directory)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(record, file)
        os.replace(temporary, self.directory / "record.json")

    def _quarantine(self, target: Path, why: str) -> None:
        for file in self.files:
            file.close()
        target.parent.mkdir(exist_ok=True)
        os.rename(self.directory, target)
        (target / "why.txt").write_text(why + "\n", encoding="utf-8")

    def _remove(self) -> None:
        for file in self.files:
            file.close()
        trash = self.spool.trash / f"{self.game_id}.{uuid.uuid4().hex}"
        try:
            os.rename(self.directory, trash)
        except FileNotFoundError:
            return
        self.spool.emptier.delete(trash)

    def _read_record(self) -> None:
        try:
            record: Any = json.loads((self.directory / "record.json").read_text(encoding="utf-8"))
            self.started_at = float(record.get("started_at", self.started_at))
            self.broken_saves = int(record.get("broken_saves", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            pass  # the start time falls back to the folder's age


class Emptier:
    """Deletes folders from the trash in a thread of its own.

    Unlinking can be slow (a filesystem mounted with ``discard`` waits for the
    device on every file: about 200 files a second seen on a virtual disk), and
    the spool's writer must go on writing meanwhile. What is still in the trash
    when the process ends is deleted by the next start.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[Path] = queue.Queue()
        self._thread: threading.Thread | None = None

    def delete(self, path: Path) -> None:
        if self._thread is not None and not self._thread.is_alive():
            # Started before twistd forked into the background: a fork keeps only
            # the thread that forked, and the queue would wake the dead one. What
            # it had not deleted goes to a new queue and a new thread.
            left, self._queue = list(self._queue.queue), queue.Queue()
            for earlier in left:
                self._queue.put(earlier)
            self._thread = None
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="faf-replay-spool-trash", daemon=True)
            self._thread.start()
        self._queue.put(path)

    def wait(self) -> None:
        """Until everything handed over is deleted (tests, tools)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            path = self._queue.get()
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                self._queue.task_done()


class Spool:
    def __init__(
        self, directory: str | os.PathLike[str], submit: Submit = run_now, open_files: int | None = None
    ) -> None:
        self.directory = Path(directory)
        #: How many upload files may hold a descriptor at once.
        self.descriptors = Descriptors(open_files)
        self.games = self.directory / "games"
        self.trash = self.directory / "trash"
        #: Games whose save failed by their data, kept for an operator to look at.
        self.quarantine = self.directory / "quarantine"
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _make_private(self.directory)
        self.games.mkdir(exist_ok=True)
        self.trash.mkdir(exist_ok=True)
        self.emptier = Emptier()
        for left in self.trash.iterdir():  # what a previous run was deleting
            self.emptier.delete(left)
        self._submit = submit
        self._batch: list[tuple[SpoolFile, bytes, Done]] = []
        #: Called with an exception when a job of the writer failed (for the log).
        self.on_error: Callable[[Exception], None] = lambda error: None
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
            uploads, problem = guarded(game.recovered_uploads)
            recovered.append(RecoveredGame(game.game_id, game.started_at, game, uploads or [], problem))
        return sorted(recovered, key=lambda g: g.started_at)

    def forget(self, game: GameSpool) -> None:
        self._open.pop(id(game), None)

    def write(self, file: SpoolFile, data: bytes, done: Done) -> None:
        """Queue an append to ``file``; it goes with the next batch (:meth:`send`)."""
        self._batch.append((file, data, done))

    def resume(self, file: SpoolFile, offset: int, data: bytes, done: Done) -> None:
        """Have ``file``, which refused a write, take the upload's bytes from ``offset`` on
        (``SpoolFile.rewrite_from``), after everything queued so far."""
        self.submit(lambda: file.rewrite_from(offset, data), done)

    def send(self) -> None:
        """Hand the queued appends to the writer, as one job."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        self._submit(lambda: _write_all(batch), lambda results: _confirm(batch, results))

    def submit(self, job: Callable[[], Any], done: Done) -> None:
        """Run ``job`` in the writer, after everything queued so far."""
        self.send()
        self._submit(job, done)

    def report(self, result: Any) -> None:
        if isinstance(result, Exception):
            self.on_error(result)

    def sync(self, done: Callable[[Any], None] | None = None) -> None:
        """Make everything written so far durable (a job for the writer)."""
        self.submit(self._sync, done or self.report)

    def _sync(self) -> None:
        if _syncfs is not None:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                if _syncfs(fd) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, os.strerror(code))
            finally:
                os.close(fd)
            return
        for game in list(self._open.values()):
            for file in list(game.files):
                with file._lock:
                    if file.fd is not None and not file.closed:
                        os.fsync(file.fd)


def _make_private(directory: Path) -> None:
    """The spool holds the running games undelayed, and by default it lies in
    the vault, which a content server may serve: only the server's own user may
    enter it. A filesystem without modes (or a folder of another owner) keeps
    what it has."""
    try:
        os.chmod(directory, 0o700)
    except OSError:
        pass


def _write_all(batch: list[tuple[SpoolFile, bytes, Done]]) -> list[Any]:
    results: list[Any] = []
    for file, data, _ in batch:
        try:
            results.append(file.write(data))
        except Exception as error:
            results.append(error)
    return results


def _confirm(batch: list[tuple[SpoolFile, bytes, Done]], results: Any) -> None:
    if isinstance(results, Exception):  # the job itself failed: every write did
        results = [results] * len(batch)
    for (_, _, done), result in zip(batch, results, strict=True):
        done(result)


def _find_syncfs() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    return function


_syncfs = _find_syncfs()

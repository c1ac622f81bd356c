"""Games that have ended, watched from the vault.

A watcher who asks for a game after its write phase (``G/<id>/…`` while the
game drains, once it is done, or after a restart) gets the whole replay as a
live watcher at the end would have: the saved file's stream, read back from
the vault, through the same :class:`~faf_replay.replay.download.DownloadProtocol`
(flow control, stall detection, linger). The game has ended, so no delay
applies. A file is watchable for ``vault_watch_age`` seconds after it was
written (0: never). A replay this run did not see end (saved by an earlier run
that a deploy or a kill stopped, or recovered from the spool) waits out the
delay first: its game was cut while its players were connected, and they may be
playing still (the registry says how long: ``GameRegistry.vault_hold``). The
vault is only read here; nothing writes to it.

Many watchers of one ended game share one decompressed copy: the reads of a
game are shared while pending and the last few replays stay in memory
(:data:`KEPT`); each watcher holds the copy it sends from.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from faf_replay import metrics
from faf_replay.replay.slices import SliceCache
from faf_replay.save.vault import decode_replay, vault_path
from faf_replay.save.workers import WorkerPool

log = Logger()

#: Ended replays kept in memory after their last read, for the next watchers.
KEPT = 4


class VaultReplay:
    """One ended game's stream, as a watcher reads it (see ``download.WatchedReplay``)."""

    #: Nothing more will come: everything is visible at once.
    write_phase_over = True

    def __init__(self, game_id: int, stream: bytes) -> None:
        self.game_id = game_id
        #: The whole stream goes as the body: the header is in it.
        self.header: bytes | None = b""
        view = memoryview(stream)
        self.visible = len(stream)
        # Watchers at the same place share one copy of a slice, as a live game's do.
        self._slices = SliceCache(lambda start, end: bytes(view[start:end]))

    def read(self, start: int, end: int) -> bytes:
        return self._slices.slice(start, min(end, self.visible))

    def remove_watcher(self, watcher: object) -> None:
        """Nothing to do: an ended game keeps no list of its watchers."""


class TooYoung(Exception):
    """A saved replay not yet as old as a watcher of it must wait for."""

    def __init__(self, age: float, min_age: float) -> None:
        super().__init__(f"saved {age:.0f} s ago, watchable {min_age:.0f} s after its save")
        self.age, self.min_age = age, min_age


def read_saved_stream(path: Path, max_age: float, now: float, min_age: float = 0.0) -> bytes | None:
    """The replay stream saved at ``path`` (its zstd frame, decompressed), or
    None when there is no such file or it was written more than ``max_age``
    seconds before ``now``; :class:`TooYoung` when it was written less than
    ``min_age`` seconds before. Blocking: run it in a worker thread."""
    try:
        age = now - os.stat(path).st_mtime
        if age > max_age:
            return None
        if age < min_age:
            raise TooYoung(age, min_age)
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode_replay(data)


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; raises when it cannot be known (``Path.exists`` would say no)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    return True


class VaultReplays:
    def __init__(self, vault: str, max_age: float, workers: WorkerPool) -> None:
        self.vault = vault
        self.max_age = max_age
        self._workers = workers
        self._kept: OrderedDict[int, VaultReplay] = OrderedDict()
        self._pending: dict[int, list[Deferred]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_age > 0

    def open(self, game_id: int, min_age: float = 0.0) -> Deferred:
        """Fires with the game's :class:`VaultReplay`, or None when the vault
        has no watchable replay for it: none, too old, saved less than
        ``min_age`` seconds ago (logged), or it cannot be read (logged)."""
        if not self.enabled:
            return succeed(None)
        kept = self._kept.get(game_id)
        if kept is not None:
            self._kept.move_to_end(game_id)
            return succeed(kept)
        waiter: Deferred = Deferred()
        waiters = self._pending.setdefault(game_id, [])
        waiters.append(waiter)
        if len(waiters) == 1:
            path = vault_path(self.vault, game_id)
            read = self._workers.run(read_saved_stream, path, self.max_age, time.time(), min_age)
            read.addCallbacks(
                self._read, self._unreadable, callbackArgs=(game_id,), errbackArgs=(game_id, path)
            )
        return waiter

    def holds(self, game_id: int) -> Deferred:
        """Fires with whether the vault has a replay file for the game, watchable or not
        (looked at in a worker thread); fails with the OSError when it cannot be looked at."""
        return self._workers.run(_exists, vault_path(self.vault, game_id))

    def _read(self, stream: bytes | None, game_id: int) -> None:
        replay = None if stream is None else VaultReplay(game_id, stream)
        if replay is not None:
            self._kept[game_id] = replay
            while len(self._kept) > KEPT:
                self._kept.popitem(last=False)
        for waiter in self._pending.pop(game_id, []):
            waiter.callback(replay)

    def _unreadable(self, failure: Failure, game_id: int, path: Path) -> None:
        young = failure.value
        if isinstance(young, TooYoung):
            log.info(
                "game {game_id}: not served from the vault yet: this run did not see it end and its "
                "players may be playing still; its replay was saved {age:.0f} s ago, watchable "
                "{left:.0f} s from now",
                game_id=game_id,
                age=young.age,
                left=young.min_age - young.age,
            )
            self._read(None, game_id)
            return
        metrics.vault_read_errors.inc()
        log.failure(
            "game {game_id}: its saved replay {path} cannot be read for a watcher",
            failure,
            level=LogLevel.error,
            game_id=game_id,
            path=str(path),
        )
        self._read(None, game_id)

"""Database bookkeeping of saved replays, through the outbox.

Every replay saved with ``--db`` leaves an outbox entry (``outbox.py``) before
the database hears of it. The :class:`Bookkeeper` then fills the file's JSON
line from the database when it was saved without (the database was down or
slow), sets ``replay_ticks`` and ``replay_available``, and removes the entry.
When the database cannot answer, the entry stays and is retried with backoff,
across restarts too. Nothing here ever sets ``replay_available`` to 0.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from faf_replay import metrics
from faf_replay.database.outbox import Entry, FileChanged, Outbox, complete_metadata
from faf_replay.database.pool import Database, DatabaseError, GameRecord
from faf_replay.save.metadata import database_metadata
from faf_replay.save.retry import Retry
from faf_replay.save.workers import WorkerPool

log = Logger()

RETRY_FIRST = 5.0
RETRY_MAX = 300.0


class Bookkeeper(Service):
    def __init__(
        self, outbox: Outbox, database: Database, reactor: IReactorTime, workers: WorkerPool
    ) -> None:
        self.outbox = outbox
        self._database = database
        self._workers = workers
        self._busy: set[int] = set()
        self._retry = Retry(reactor, self.drain, RETRY_FIRST, RETRY_MAX)
        metrics.outbox_entries.set(len(outbox))

    def startService(self) -> None:
        super().startService()
        waiting = len(self.outbox)
        if waiting:
            log.info("{count} replay(s) wait for database bookkeeping from an earlier run", count=waiting)
            self.drain()

    def stopService(self) -> None:
        super().stopService()
        self._retry.cancel()

    def add(self, entry: Entry) -> None:
        """Record work for the database; blocking (it fsyncs), run it in a thread."""
        self.outbox.add(entry)

    def complete(self, entry: Entry) -> Deferred:
        """Try the entry's work now; fires True when done. On a database error
        the entry stays and a retry is scheduled; the Deferred never fails."""
        metrics.outbox_entries.set(len(self.outbox))
        if entry.game_id in self._busy:
            return succeed(False)
        d = self._complete(entry)
        d.addErrback(self._postpone)
        return d

    def drain(self) -> Deferred:
        """Work through every entry, oldest first; stops at the first database error."""
        self._retry.cancel()

        @inlineCallbacks
        def work():
            for entry in self.outbox.entries():
                if entry.game_id in self._busy:
                    continue
                yield self._complete(entry)
            self._retry.reset()

        d = work()
        d.addErrback(self._postpone)
        return d

    @inlineCallbacks
    def _complete(self, entry: Entry):
        self._busy.add(entry.game_id)
        try:
            completed, refused = False, None
            if entry.needs_metadata:
                record = yield self._database.read_game(entry.game_id)
                try:
                    completed = yield self._complete_file(entry, record)
                except OSError as error:  # the vault has no room for the new JSON line
                    refused = error
            rows = yield self._database.mark_saved(entry.game_id, entry.ticks)
            if refused is not None:
                # The file is there and whole: the row says so; its JSON line waits.
                metrics.save_failures.labels("io").inc()
                log.warn(
                    "game {game_id}: row marked; the vault refused its JSON line ({why}), kept in the "
                    "outbox for the next try",
                    game_id=entry.game_id,
                    why=str(refused),
                )
                self._later("room in the vault")
                return False
            yield self._workers.run(self.outbox.remove, entry.game_id)
            metrics.outbox_entries.set(len(self.outbox))
            if entry.needs_metadata or rows == 0:
                log.info(
                    "game {game_id}: database bookkeeping done ({what})",
                    game_id=entry.game_id,
                    what=", ".join(
                        part
                        for part, done in [("JSON line completed", completed), ("row marked", rows > 0)]
                        if done
                    )
                    or "the database does not know the game",
                )
            return True
        finally:
            self._busy.discard(entry.game_id)

    @inlineCallbacks
    def _complete_file(self, entry: Entry, record: GameRecord | None):
        if record is None:
            return False
        metadata = database_metadata(record, started_at=entry.started_at, now=entry.ended_at)
        try:
            yield self._workers.run(complete_metadata, entry, metadata)
        except FileChanged as why:
            log.warn("game {game_id}: JSON line not completed: {why}", game_id=entry.game_id, why=str(why))
            return False
        return True

    def _postpone(self, failure) -> bool:
        failure.trap(DatabaseError)
        self._later()
        return False

    def _later(self, waiting_for: str = "the database") -> None:
        """The next try of the outbox, after a wait (unless one is scheduled)."""
        if self.running and not self._retry.pending:
            delay = self._retry.later()
            log.info(
                "{count} replay(s) wait for {waiting_for}; next try in {delay:g} s",
                count=len(self.outbox),
                waiting_for=waiting_for,
                delay=delay,
            )

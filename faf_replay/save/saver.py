"""Saving a finished replay: its metadata, the vault file, the database's part.

The :class:`Saver` turns a :class:`~faf_replay.replay.finished.FinishedReplay` into a
``.fafreplay`` file. With a database it first asks for the game's record
(bounded by ``db_timeout``; the replay header's facts stand in when the game is
unknown or the database is down or slow), then compresses and writes the file
in a worker thread (``vault.write_replay``) together with an outbox entry, then
lets the :class:`~faf_replay.database.bookkeeper.Bookkeeper` complete the database's
part, now or, if the database cannot answer, later.

Its Deferred never fails: it fires with a :class:`~faf_replay.replay.finished.SaveOutcome`,
and every outcome is logged once and counted. When the vault refuses
(``FAILED``) the game keeps its spool and tries again later. An existing file
is never replaced, and its row is then left alone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import fafreplay
from twisted.internet import defer
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from faf_replay import metrics
from faf_replay.database.bookkeeper import Bookkeeper
from faf_replay.database.outbox import Entry
from faf_replay.database.pool import MOD_NAME, Database, DatabaseError, GameRecord
from faf_replay.replay.finished import FinishedReplay, SaveOutcome
from faf_replay.save.best_effort import guarded
from faf_replay.save.metadata import database_metadata, replay_ticks, standalone_metadata
from faf_replay.save.vault import ReplayExistsError, SavedReplay, vault_path, write_replay
from faf_replay.save.workers import WorkerPool
from faf_replay.settings import Settings

log = Logger()


@dataclass(frozen=True)
class _Metadata:
    values: dict[str, Any] | None  # None: take the replay header's
    #: The database could not answer: complete the JSON line later.
    later: bool = False


@dataclass(frozen=True)
class _Written:
    saved: SavedReplay
    entry: Entry | None
    #: What could not be read from the replay itself (neutral values were saved).
    problems: tuple[str, ...] = ()
    #: Whether the entry's database work is kept in the outbox (a full disk may refuse it).
    kept: bool = True


class Saver:
    def __init__(
        self,
        settings: Settings,
        reactor: IReactorTime,
        workers: WorkerPool,
        database: Database | None = None,
        bookkeeper: Bookkeeper | None = None,
    ) -> None:
        if (database is None) != (bookkeeper is None):
            raise ValueError("a database goes with a bookkeeper")
        self._settings = settings
        self._reactor = reactor
        self._workers = workers
        self._database = database
        self._bookkeeper = bookkeeper
        #: The vault's refusal of hard links was logged (once a process).
        self._said_links_refused = False
        #: Games whose file is saved while neither the database nor the outbox took their row.
        self._unrecorded: set[int] = set()

    def save(self, replay: FinishedReplay) -> Deferred:
        """Write ``replay``; fires with its :class:`SaveOutcome`."""
        if replay.header is None:
            log.info(
                "game {game_id}: no upload completed a replay header; nothing to save",
                game_id=replay.game_id,
            )
            metrics.save_failures.labels("no data").inc()
            return succeed(SaveOutcome.NOTHING)
        started = self._reactor.seconds()
        d = self._metadata(replay)
        d.addCallback(lambda metadata: self._in_thread(self._write, replay, metadata))
        d.addCallback(self._written, replay, started)
        d.addErrback(self._failed, replay)
        return d

    def _in_thread(self, function: Any, *args: Any) -> Deferred:
        return self._workers.run(function, *args)

    # -- metadata -------------------------------------------------------------

    def _metadata(self, replay: FinishedReplay) -> Deferred:
        if self._database is None:
            return succeed(_Metadata(None))
        d = self._database.read_game(replay.game_id)
        d.addTimeout(self._settings.db_timeout, self._reactor)
        d.addCallbacks(self._from_record, self._database_down, callbackArgs=(replay,), errbackArgs=(replay,))
        return d

    def _from_record(self, record: GameRecord | None, replay: FinishedReplay) -> _Metadata:
        if record is None:
            log.warn(
                "game {game_id} is not in the database; saving it with what the replay tells",
                game_id=replay.game_id,
            )
            return _Metadata(None)
        if record.featured_mod is not None and not MOD_NAME.fullmatch(record.featured_mod):
            log.warn(
                "game {game_id}: featured mod {mod!r} is not a table name; no file versions",
                game_id=replay.game_id,
                mod=record.featured_mod,
            )
        values, why = guarded(
            lambda: database_metadata(record, started_at=replay.started_at, now=self._reactor.seconds())
        )
        if why is not None:
            metrics.metadata_errors.inc()
            log.warn(
                "game {game_id}: its database record cannot be used ({why}); saving it with what the "
                "replay tells",
                game_id=replay.game_id,
                why=why,
            )
            return _Metadata(None)
        return _Metadata(values)

    def _database_down(self, failure: Failure, replay: FinishedReplay) -> _Metadata:
        failure.trap(DatabaseError, defer.TimeoutError)
        why = str(failure.value) if failure.check(DatabaseError) else "no answer in time"
        log.warn(
            "game {game_id}: no database metadata ({why}); saving it with what the replay tells "
            "and completing it once the database answers",
            game_id=replay.game_id,
            why=why,
        )
        return _Metadata(None, later=True)

    # -- the file (in a worker thread) ------------------------------------------

    def _write(self, replay: FinishedReplay, metadata: _Metadata) -> _Written:
        assert replay.header is not None
        problems: list[str] = []
        values = metadata.values
        if values is None:
            values = standalone_metadata(
                replay.game_id,
                replay.header,
                recorder=replay.recorder,
                launched_at=replay.started_at,
                game_end=replay.ended_at,
                problems=problems,
            )
        body = replay.body_bytes()
        saved = write_replay(
            self._settings.vault, replay.game_id, values, replay.header + body, self._settings.zstd_level
        )
        if self._bookkeeper is None:
            return _Written(saved, None, tuple(problems))
        entry = Entry(
            replay.game_id,
            str(saved.path),
            saved.size,
            replay_ticks(body, problems),
            metadata.later,
            replay.started_at,
            replay.ended_at,
        )
        kept = self._record(entry)
        return _Written(saved, entry, tuple(problems), kept)

    def _record(self, entry: Entry) -> bool:
        """Keep the entry in the outbox; False (logged) when the disk refuses."""
        assert self._bookkeeper is not None
        try:
            self._bookkeeper.add(entry)
        except OSError as error:
            # The database work is still tried now, just not kept for later.
            metrics.spool_errors.inc()
            log.error(
                "game {game_id}: cannot keep its database work in the outbox: {why}",
                game_id=entry.game_id,
                why=str(error),
            )
            return False
        return True

    # -- outcomes ---------------------------------------------------------------

    @inlineCallbacks
    def _written(self, written: _Written, replay: FinishedReplay, started: float):
        saved = written.saved
        elapsed = self._reactor.seconds() - started
        metrics.saved_replays.inc()
        metrics.save_seconds.observe(elapsed)
        for problem in written.problems:
            metrics.metadata_errors.inc()
            log.warn(
                "game {game_id}: {problem}; saved with neutral values there",
                game_id=replay.game_id,
                problem=problem,
            )
        if saved.links_refused and not self._said_links_refused:
            self._said_links_refused = True
            metrics.vault_refuses_hard_links.set(1)
            log.warn(
                "the vault {vault} refuses hard links (CIFS, exFAT, some FUSE mounts): replays are "
                "claimed and renamed into place instead; an existing replay is still never replaced",
                vault=self._settings.vault,
            )
        log.info(
            "game {game_id}: saved {path} ({size} bytes, {body} body bytes) in {elapsed:.3f} s",
            game_id=replay.game_id,
            path=str(saved.path),
            size=saved.size,
            body=replay.length,
            elapsed=elapsed,
        )
        if written.entry is not None and self._bookkeeper is not None:
            # A slow database does not hold the game up: the work goes on (or
            # is retried) in the background.
            done = yield _within(
                self._bookkeeper.complete(written.entry), self._settings.db_timeout, self._reactor
            )
            if not done and not written.kept:
                return self._unrecorded_row(replay)
            if not done:
                log.warn(
                    "game {game_id}: the file is saved; its database row waits in the outbox",
                    game_id=replay.game_id,
                )
        return SaveOutcome.SAVED

    def _unrecorded_row(self, replay: FinishedReplay) -> SaveOutcome:
        """The file is saved, but neither the database nor the outbox has its row: the save is
        not over, so that the spool keeps the game and a later attempt marks the row for the
        file there (a kill -9 meanwhile: the next run does, from the spool)."""
        self._unrecorded.add(replay.game_id)
        log.error(
            "game {game_id}: the file is saved, but neither the database nor the outbox took its "
            "row; the game stays in the spool until one does",
            game_id=replay.game_id,
        )
        return SaveOutcome.FAILED

    @inlineCallbacks
    def _failed(self, failure: Failure, replay: FinishedReplay):
        if failure.check(ReplayExistsError):
            metrics.save_failures.labels("exists").inc()
            log.warn(
                "game {game_id}: a replay is already saved ({why}); this copy was not written",
                game_id=replay.game_id,
                why=str(failure.value),
            )
            if self._bookkeeper is not None and (replay.recovered or replay.game_id in self._unrecorded):
                # A crash may have come between writing that file and telling the
                # database, or an earlier attempt could not tell it: mark the row
                # for the file that is there.
                entry, kept = yield self._in_thread(self._entry_for_existing, replay)
                done = yield _within(
                    self._bookkeeper.complete(entry), self._settings.db_timeout, self._reactor
                )
                if not done and not kept:
                    return self._unrecorded_row(replay)
                self._unrecorded.discard(replay.game_id)
            return SaveOutcome.EXISTS
        if failure.check(OSError):
            metrics.save_failures.labels("io").inc()
            log.error(
                "game {game_id}: cannot write the replay file: {why}",
                game_id=replay.game_id,
                why=str(failure.value),
            )
            return SaveOutcome.FAILED
        # Not the vault, not the database: the data itself (or a bug it meets).
        metrics.save_failures.labels("error").inc()
        log.failure("game {game_id}: saving failed", failure, level=LogLevel.error, game_id=replay.game_id)
        return SaveOutcome.BROKEN

    def _entry_for_existing(self, replay: FinishedReplay) -> tuple[Entry, bool]:
        path = vault_path(self._settings.vault, replay.game_id)
        data = path.read_bytes()
        scfa, _ = guarded(lambda: fafreplay.extract_scfa(io.BytesIO(data)))
        body, _ = guarded(lambda: scfa[fafreplay.body_offset(scfa) :]) if scfa is not None else (None, None)
        ticks = replay_ticks(body) if body is not None else None
        entry = Entry(replay.game_id, str(path), len(data), ticks, False, replay.started_at, replay.ended_at)
        return entry, self._record(entry)


def _within(work: Deferred, seconds: float, clock: IReactorTime) -> Deferred:
    """``work``'s result, or False after ``seconds``; ``work`` itself runs on."""
    result: Deferred = Deferred()

    def finished(value: Any) -> Any:
        if not result.called:
            timer.cancel()
            result.callback(value)
        return value

    def late() -> None:
        if not result.called:
            result.callback(False)

    timer = clock.callLater(seconds, late)
    work.addBoth(finished)
    return result

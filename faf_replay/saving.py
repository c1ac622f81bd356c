"""Saving a finished replay: its metadata, the vault file, the database row.

The :class:`Saver` turns a :class:`~faf_replay.game.FinishedReplay` into a
``.fafreplay`` file. With a database it first reads the game's record there
(falling back to what the replay header tells when the game is unknown or the
database is down), then compresses and writes the file in a worker thread
(``vault.write_replay``), then sets ``replay_available`` and ``replay_ticks``.
Its Deferred never fails: it fires with a :class:`~faf_replay.game.SaveOutcome`,
and every outcome is logged once and counted. When the vault refuses
(``FAILED``) the game keeps its spool and tries again later. An existing file
is never replaced, and its row is then left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fafreplay
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from faf_replay import metrics
from faf_replay.database import MOD_NAME, Database, DatabaseError, GameRecord
from faf_replay.game import FinishedReplay, SaveOutcome
from faf_replay.metadata import database_metadata, standalone_metadata
from faf_replay.settings import Settings
from faf_replay.vault import ReplayExistsError, SavedReplay, write_replay

log = Logger()


@dataclass(frozen=True)
class _Written:
    saved: SavedReplay
    ticks: int | None


class Saver:
    def __init__(
        self,
        settings: Settings,
        reactor: IReactorTime,
        pool: ThreadPool,
        database: Database | None = None,
    ) -> None:
        self._settings = settings
        self._reactor = reactor
        self._pool = pool
        self._database = database

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
        d.addCallback(
            lambda metadata: deferToThreadPool(
                self._reactor,  # type: ignore[arg-type]
                self._pool,
                self._write,
                replay,
                metadata,
            )
        )
        d.addCallback(self._written, replay, started)
        d.addErrback(self._failed, replay)
        return d

    # -- metadata -------------------------------------------------------------

    def _metadata(self, replay: FinishedReplay) -> Deferred:
        """The database's metadata, or None to take the replay header's."""
        if self._database is None:
            return succeed(None)
        d = self._database.read_game(replay.game_id)
        d.addCallbacks(self._from_record, self._database_down, callbackArgs=(replay,), errbackArgs=(replay,))
        return d

    def _from_record(self, record: GameRecord | None, replay: FinishedReplay) -> dict[str, Any] | None:
        if record is None:
            log.warn(
                "game {game_id} is not in the database; saving it with what the replay tells",
                game_id=replay.game_id,
            )
            return None
        if record.featured_mod is not None and not MOD_NAME.fullmatch(record.featured_mod):
            log.warn(
                "game {game_id}: featured mod {mod!r} is not a table name; no file versions",
                game_id=replay.game_id,
                mod=record.featured_mod,
            )
        return database_metadata(record, started_at=replay.started_at, now=self._reactor.seconds())

    def _database_down(self, failure: Failure, replay: FinishedReplay) -> None:
        failure.trap(DatabaseError)
        log.warn(
            "game {game_id}: no database metadata ({why}); saving it with what the replay tells",
            game_id=replay.game_id,
            why=str(failure.value),
        )

    # -- the file (in a worker thread) ------------------------------------------

    def _write(self, replay: FinishedReplay, metadata: dict[str, Any] | None) -> _Written:
        assert replay.header is not None
        if metadata is None:
            metadata = standalone_metadata(
                replay.game_id,
                replay.header,
                recorder=replay.recorder,
                launched_at=replay.started_at,
                game_end=replay.ended_at,
            )
        body = replay.body_bytes()
        saved = write_replay(
            self._settings.vault,
            replay.game_id,
            metadata,
            replay.header + body,
            self._settings.zstd_level,
        )
        return _Written(saved, _ticks(body) if self._database is not None else None)

    # -- outcomes ---------------------------------------------------------------

    def _written(self, written: _Written, replay: FinishedReplay, started: float) -> Deferred | SaveOutcome:
        saved = written.saved
        elapsed = self._reactor.seconds() - started
        metrics.saved_replays.inc()
        metrics.save_seconds.observe(elapsed)
        log.info(
            "game {game_id}: saved {path} ({size} bytes, {body} body bytes) in {elapsed:.3f} s",
            game_id=replay.game_id,
            path=str(saved.path),
            size=saved.size,
            body=replay.body_length if replay.body_length is not None else len(replay.body),
            elapsed=elapsed,
        )
        if self._database is None:
            return SaveOutcome.SAVED
        d = self._database.mark_saved(replay.game_id, written.ticks)
        d.addCallbacks(self._marked, self._not_marked, callbackArgs=(replay,), errbackArgs=(replay,))
        d.addCallback(lambda _: SaveOutcome.SAVED)
        return d

    def _marked(self, rows: int, replay: FinishedReplay) -> None:
        if rows == 0:
            log.info("game {game_id}: no game_stats row to mark as saved", game_id=replay.game_id)

    def _not_marked(self, failure: Failure, replay: FinishedReplay) -> None:
        failure.trap(DatabaseError)
        log.warn(
            "game {game_id}: the file is saved but its row is not marked ({why})",
            game_id=replay.game_id,
            why=str(failure.value),
        )

    def _failed(self, failure: Failure, replay: FinishedReplay) -> SaveOutcome:
        if failure.check(ReplayExistsError):
            metrics.save_failures.labels("exists").inc()
            log.warn(
                "game {game_id}: a replay is already saved ({why}); this copy was not written",
                game_id=replay.game_id,
                why=str(failure.value),
            )
            return SaveOutcome.EXISTS
        if failure.check(OSError):
            metrics.save_failures.labels("io").inc()
            log.error(
                "game {game_id}: cannot write the replay file: {why}",
                game_id=replay.game_id,
                why=str(failure.value),
            )
        else:
            metrics.save_failures.labels("error").inc()
            log.failure("game {game_id}: saving failed", failure, game_id=replay.game_id)
        return SaveOutcome.FAILED


def _ticks(body: bytes) -> int | None:
    """Advance ticks in the merged body, or None when FAF's parser cannot count them."""
    try:
        return int(fafreplay.body_ticks(body))
    except Exception:
        return None

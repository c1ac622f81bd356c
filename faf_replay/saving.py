"""Saving a finished replay to the vault, off the reactor thread.

The :class:`Saver` turns a :class:`~faf_replay.game.FinishedReplay` into a
``.fafreplay`` file: metadata from the replay header, compression and file I/O
in a worker thread (``vault.write_replay``). Its Deferred never fails: every
outcome is logged once and counted, and the game moves on either way.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from faf_replay import metrics
from faf_replay.game import FinishedReplay
from faf_replay.metadata import standalone_metadata
from faf_replay.settings import Settings
from faf_replay.vault import ReplayExistsError, SavedReplay, write_replay

log = Logger()


class Saver:
    def __init__(self, settings: Settings, reactor: IReactorTime, pool: ThreadPool) -> None:
        self._settings = settings
        self._reactor = reactor
        self._pool = pool

    def save(self, replay: FinishedReplay) -> Deferred:
        """Write ``replay``; fires with the :class:`SavedReplay` or ``None``."""
        if replay.header is None:
            log.info(
                "game {game_id}: no upload completed a replay header; nothing to save",
                game_id=replay.game_id,
            )
            metrics.save_failures.labels("no data").inc()
            return succeed(None)
        started = self._reactor.seconds()
        reactor = self._reactor
        assert IReactorFromThreads.providedBy(reactor)
        d = deferToThreadPool(reactor, self._pool, self._write, replay)
        d.addCallbacks(self._written, self._failed, callbackArgs=(replay, started), errbackArgs=(replay,))
        return d

    def _write(self, replay: FinishedReplay) -> SavedReplay:
        assert replay.header is not None
        metadata = standalone_metadata(
            replay.game_id,
            replay.header,
            recorder=replay.recorder,
            launched_at=replay.started_at,
            game_end=replay.ended_at,
        )
        return write_replay(
            self._settings.vault,
            replay.game_id,
            metadata,
            replay.header + replay.body,
            self._settings.zstd_level,
        )

    def _written(self, saved: SavedReplay, replay: FinishedReplay, started: float) -> SavedReplay:
        elapsed = self._reactor.seconds() - started
        metrics.saved_replays.inc()
        metrics.save_seconds.observe(elapsed)
        log.info(
            "game {game_id}: saved {path} ({size} bytes, {body} body bytes) in {elapsed:.3f} s",
            game_id=replay.game_id,
            path=str(saved.path),
            size=saved.size,
            body=len(replay.body),
            elapsed=elapsed,
        )
        return saved

    def _failed(self, failure: Failure, replay: FinishedReplay) -> None:
        if failure.check(ReplayExistsError):
            metrics.save_failures.labels("exists").inc()
            log.warn(
                "game {game_id}: a replay is already saved ({why}); this copy was not written",
                game_id=replay.game_id,
                why=str(failure.value),
            )
        elif failure.check(OSError):
            metrics.save_failures.labels("io").inc()
            log.error(
                "game {game_id}: cannot write the replay file: {why}",
                game_id=replay.game_id,
                why=str(failure.value),
            )
        else:
            metrics.save_failures.labels("error").inc()
            log.failure("game {game_id}: saving failed", failure, game_id=replay.game_id)

"""A finished game's save, tried until it lands or is put aside.

The game hands its :class:`~faf_replay.replay.finished.FinishedReplay` to
:class:`SaveAttempts` once (``Game.end``). An attempt ends in one of the
:class:`~faf_replay.replay.finished.SaveOutcome`\\ s:

- saved, already in the vault, or nothing to save: over (the game drains);
- the vault refused (``FAILED``): tried again after 5 s, doubling up to 5 min
  (``retry.Retry``), or at once when another game's file was saved (the vault
  has room again: ``waits_for_room``, ``now``); the spool keeps the data meanwhile;
- broken by the data itself (``BROKEN``, or an unexpected error): counted, in
  the spool too so that the count survives restarts; after
  ``SAVE_ATTEMPTS_BROKEN`` such failures the game's uploads go to the spool's
  quarantine (``docs/operations.md``: Quarantine) and it is over.

At shutdown the retries stop and an unsaved replay stays in the spool for the
next run.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from faf_replay import metrics
from faf_replay.replay.finished import FinishedReplay, SaveFunction, SaveOutcome
from faf_replay.save.retry import Retry
from faf_replay.spool.spool import GameSpool

log = Logger()

#: Seconds before the first retry of a save the vault refused; doubles up to the maximum.
SAVE_RETRY_FIRST = 5.0
SAVE_RETRY_MAX = 300.0
#: Saves that fail by the data itself before the game goes to quarantine.
SAVE_ATTEMPTS_BROKEN = 3


class SaveAttempts:
    def __init__(
        self,
        replay: FinishedReplay,
        save: SaveFunction,
        clock: IReactorTime,
        spool: GameSpool | None,
        on_over: Callable[[], None],
        *,
        retrying: bool = True,
    ) -> None:
        self._replay = replay
        self._save = save
        self._clock = clock
        self._spool = spool
        self._on_over = on_over
        self._retrying = retrying
        self._retry = Retry(clock, self._attempt, SAVE_RETRY_FIRST, SAVE_RETRY_MAX)
        self._waiters: list[Deferred] = []
        self._broken = 0  # the spool keeps the count across restarts
        self._last: object = None  # the last attempt's outcome
        self.over = False

    @property
    def game_id(self) -> int:
        return self._replay.game_id

    def start(self) -> Deferred:
        """The first attempt; fires with its :class:`SaveOutcome`."""
        waiter = self._wait()
        self._attempt()
        return waiter

    @property
    def waits_for_room(self) -> bool:
        """The vault refused the last attempt and the next one waits for its retry."""
        return self._last is SaveOutcome.FAILED and self._retry.pending

    def now(self) -> Deferred:
        """Fires with the outcome of the next attempt, made now if one waits for its retry."""
        waiter = self._wait()
        if self._retry.cancel():
            self._attempt()
        return waiter

    def stop(self) -> None:
        """Shutdown: no more retries; an unsaved replay stays in the spool for the next run."""
        self._retrying = False
        self._retry.cancel()
        if not self.over and self._spool is not None:
            self._spool.close()

    def _wait(self) -> Deferred:
        waiter: Deferred = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _attempt(self) -> None:
        # A save function that raises instead of failing its Deferred is a broken save too.
        maybeDeferred(self._save, self._replay).addBoth(self._attempted)

    def _attempted(self, outcome: object) -> None:
        if isinstance(outcome, Failure):
            log.failure("game {game_id}: saving failed", outcome, level=LogLevel.error, game_id=self.game_id)
            outcome = SaveOutcome.BROKEN
        self._last = outcome
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(outcome)
        if outcome is SaveOutcome.BROKEN and self._broken_once():
            self._over()
        elif outcome in (SaveOutcome.FAILED, SaveOutcome.BROKEN):
            if self._retrying:
                delay = self._retry.later()
                log.info(
                    "game {game_id}: the replay stays in the spool; next try in {delay:g} s",
                    game_id=self.game_id,
                    delay=delay,
                )
        else:
            metrics.finished_replays.inc()
            self._over()

    def _over(self) -> None:
        self.over = True
        self._on_over()

    def _broken_once(self) -> bool:
        """A save failed by the data itself: counted; True when that was the
        last such failure allowed and the game went to quarantine."""
        self._broken += 1
        if self._spool is not None:
            self._spool.note_broken("saving failed")
            self._broken = self._spool.broken_saves
        if self._broken < SAVE_ATTEMPTS_BROKEN:
            return False
        metrics.quarantined_replays.inc()
        kept = "given up (no spool to keep it)"
        if self._spool is not None:
            where = self._spool.quarantine(f"saving failed {self._broken} times", self._clock.seconds())
            kept = f"its uploads are kept in quarantine at {where} (docs/operations.md: Quarantine)"
        log.error(
            "game {game_id}: saving failed {count} times the same way; {kept}",
            game_id=self.game_id,
            count=self._broken,
            kept=kept,
        )
        return True

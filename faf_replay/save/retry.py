"""Trying again after a failure, waiting longer each time.

A save the vault refused (``attempts.py``) and database work the database
could not take (``database/bookkeeper.py``) are tried again after ``first`` seconds,
then twice as long each time, up to ``maximum``; a success starts the wait
over. Time comes from the clock passed in.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Retry:
    def __init__(
        self, clock: IReactorTime, attempt: Callable[[], object], first: float = 5.0, maximum: float = 300.0
    ) -> None:
        self._clock = clock
        self._attempt = attempt
        self.first = first
        self.maximum = maximum
        #: The wait before the next retry.
        self.delay = first
        self._waited = first
        self._call: IDelayedCall | None = None

    @property
    def pending(self) -> bool:
        """A retry is scheduled."""
        return self._call is not None and self._call.active()

    def later(self) -> float:
        """Schedule the next try (unless one is); the wait it got. The wait after doubles."""
        if not self.pending:
            self._waited = self.delay
            self._call = self._clock.callLater(self.delay, self._fire)
            self.delay = min(self.delay * 2, self.maximum)
        return self._waited

    def cancel(self) -> bool:
        """Cancel a scheduled retry; True if there was one."""
        pending = self.pending
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        return pending

    def reset(self) -> None:
        """It worked: the next failure waits ``first`` again."""
        self.delay = self.first

    def _fire(self) -> None:
        self._call = None
        self._attempt()

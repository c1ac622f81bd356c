"""How late the reactor runs its timers: a metric, and a log line when it is long."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from faf_replay import metrics

log = Logger()


class ReactorLagProbe(Service):
    """Measures how late a short timer fires: the longest the event loop was busy.

    Every ``interval`` seconds it asks to be called back at once; the delay
    before that happens is a stall (a long callback, blocking I/O, a big
    merge). Exported as ``replayserver_reactor_lag_seconds`` and its maximum.
    """

    def __init__(self, reactor: Any, interval: float = 0.05) -> None:
        self._reactor = reactor
        self._loop = LoopingCall(self._probe)
        self._loop.clock = reactor
        self._interval = interval
        self._pending: Any = None
        self.longest = 0.0

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._interval, now=False)

    def _probe(self) -> None:
        self._pending = self._reactor.callLater(0, self._measure, self._reactor.seconds())

    #: Stalls at least this long get a log line.
    worth_a_line = 0.1

    def _measure(self, asked: float) -> None:
        lag = max(0.0, self._reactor.seconds() - asked)
        metrics.reactor_lag.observe(lag)
        if lag > self.longest:
            self.longest = lag
            metrics.reactor_lag_max.set(lag)
        if lag >= self.worth_a_line:
            log.warn("the reactor stalled for {lag_ms:.0f} ms", lag_ms=lag * 1000)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._pending is not None and self._pending.active():
            self._pending.cancel()

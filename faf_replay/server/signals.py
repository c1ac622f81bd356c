"""SIGTERM and SIGINT as a clean stop, from the first moment the server runs."""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

log = Logger()


class ExitCleanlyOnSignal(Service):
    """SIGTERM and SIGINT stop the reactor, and twistd then exits 0.

    Twisted's own handlers make twistd re-raise the signal once the reactor has
    stopped, so the process dies "by SIGTERM" even after a clean shutdown. A
    server that saved every replay has succeeded; say so to the supervisor.
    The handlers go in before any port listens (twistd opens the ports in
    ``privilegedStartService``, well before the reactor runs: a signal then
    would otherwise kill the process outright), so this service is the root
    service's first child; again as it starts; and again right after the
    reactor has installed its own, as it starts.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._install()

    def startService(self) -> None:
        super().startService()
        self._install()
        if not self._reactor.running:
            # The reactor's own go in with its first "during startup" trigger;
            # this one comes after it, before anything "after startup".
            self._reactor.addSystemEventTrigger("during", "startup", self._install)

    def _install(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._received)

    def _received(self, number: int, frame: object) -> None:
        log.info("received {signal}: stopping", signal=signal.Signals(number).name)
        self._reactor.callFromThread(self._reactor.stop)

"""SIGTERM and SIGINT as a clean stop, from the first moment the server runs."""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

log = Logger()

_STOPS = (signal.SIGTERM, signal.SIGINT)


class ExitCleanlyOnSignal(Service):
    """SIGTERM and SIGINT stop the reactor, and twistd then exits 0.

    Twisted's own handlers make twistd re-raise the signal once the reactor has
    stopped, so the process dies "by SIGTERM" even after a clean shutdown. A
    server that saved every replay has succeeded; say so to the supervisor.
    The handlers go in before any port listens (twistd opens the ports in
    ``privilegedStartService``, well before the reactor runs: a signal then
    would otherwise kill the process outright), so this service is the root
    service's first child; again as it starts; and again right after the
    reactor has installed its own, as it starts. From this service's start
    until then the two signals are held (blocked in the main thread, and in
    the threads started meanwhile, which keep them blocked: a signal is the
    main thread's to handle): one sent while the reactor's handlers are in
    place waits, and meets ours.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._held: set[signal.Signals] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._install()

    def startService(self) -> None:
        super().startService()
        self._install()
        if not self._reactor.running:
            # The reactor's own go in with its first "during startup" trigger;
            # this one comes after it, before anything "after startup".
            self._held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
            self._reactor.addSystemEventTrigger("during", "startup", self._install_and_release)

    def _install(self) -> None:
        for number in _STOPS:
            signal.signal(number, self._received)

    def _install_and_release(self) -> None:
        self._install()
        if self._held is not None:
            held, self._held = self._held, None
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal held meanwhile comes now

    def _received(self, number: int, frame: object) -> None:
        log.info("received {signal}: stopping", signal=signal.Signals(number).name)
        self._reactor.callFromThread(self._reactor.stop)

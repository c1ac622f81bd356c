"""SIGTERM and SIGINT as a clean stop, from the first moment the server runs."""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

log = Logger()

_STOPS = (signal.SIGTERM, signal.SIGINT)


def hold_stop_signals() -> set[int | signal.Signals]:
    """Block SIGTERM and SIGINT in the calling (main) thread, and so in every
    thread it starts from now on; the mask before, for :class:`ExitCleanlyOnSignal`
    to restore. Called before the server starts any thread: the kernel gives a
    process's signal to any thread that does not block it, and the main thread
    then runs whatever handler is in place at that moment."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)


class ExitCleanlyOnSignal(Service):
    """SIGTERM and SIGINT stop the reactor, and twistd then exits 0.

    Twisted's own handlers make twistd re-raise the signal once the reactor has
    stopped, so the process dies "by SIGTERM" even after a clean shutdown. A
    server that saved every replay has succeeded; say so to the supervisor.
    The handlers go in before any port listens (twistd opens the ports in
    ``privilegedStartService``, well before the reactor runs: a signal then
    would otherwise kill the process outright), so this service is the root
    service's first child; again as it starts; and again right after the
    reactor has installed its own, as it starts. Until then the two signals are
    held (:func:`hold_stop_signals`, from before the server's first thread, or
    else from this service's start): one sent while the reactor's handlers are
    in place waits, and meets ours. The threads started meanwhile keep them
    blocked: a signal is the main thread's to handle.
    """

    def __init__(self, reactor: Any, held: set[int | signal.Signals] | None = None) -> None:
        self._reactor = reactor
        #: The mask before the signals were held, while they are.
        self._held = held

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._install()

    def startService(self) -> None:
        super().startService()
        self._install()
        if self._reactor.running:
            self._release()
            return
        if self._held is None:
            self._held = hold_stop_signals()
        # The reactor's own go in with its first "during startup" trigger;
        # this one comes after it, before anything "after startup".
        self._reactor.addSystemEventTrigger("during", "startup", self._install_and_release)

    def _install(self) -> None:
        for number in _STOPS:
            signal.signal(number, self._received)

    def _install_and_release(self) -> None:
        self._install()
        self._release()

    def _release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal held meanwhile comes now

    def _received(self, number: int, frame: object) -> None:
        log.info("received {signal}: stopping", signal=signal.Signals(number).name)
        self._reactor.callFromThread(self._reactor.stop)

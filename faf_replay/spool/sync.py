"""The spool's writer thread and its periodic fsync, as services.

Uploads reach the disk through one writer thread (:class:`SpoolWriter`), so
the reactor never waits for the disk; :class:`SpoolSync` fsyncs what was
written every ``--spool-sync`` seconds, so that a crash loses at most that
much of any upload.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from faf_replay.spool.spool import Spool


class SpoolWriter(Service):
    """The spool's one writer thread: every spool job runs there, in order."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="faf-replay-spool")

    def submit(self, job: Any, done: Any) -> None:
        d = deferToThreadPool(self._reactor, self.pool, job)
        d.addCallbacks(done, lambda failure: done(failure.value))

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred:
        """Stop once every job handed over so far is done."""
        super().stopService()
        finished: Deferred = Deferred()
        self.submit(lambda: None, finished.callback)
        finished.addCallback(lambda _: self.pool.stop())
        return finished


class SpoolSync(Service):
    """Has the spool's writer make what it wrote durable, every few seconds."""

    def __init__(self, spool: Spool, reactor: Any, interval: float) -> None:
        self.spool = spool
        self._loop = LoopingCall(self.spool.sync)
        self._loop.clock = reactor
        self._interval = interval

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        self.spool.sync()  # what stays for the next run

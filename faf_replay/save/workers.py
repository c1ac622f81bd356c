"""The worker threads: blocking work (compression, files) off the reactor.

:class:`WorkerPool` is a thread pool started and stopped with the service tree;
:meth:`WorkerPool.run` runs one function there and fires its Deferred with the
result back on the reactor's thread. The saver, the bookkeeper and the health
page use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class WorkerPool(Service):
    """A thread pool started and stopped with the service tree."""

    def __init__(
        self, reactor: IReactorFromThreads, maximum: int = 4, pool: ThreadPool | None = None
    ) -> None:
        self._reactor = reactor
        self.pool = pool or ThreadPool(minthreads=0, maxthreads=maximum, name="faf-replay-worker")

    def run(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """``function(*args)`` in a worker thread; its result on the reactor."""
        return deferToThreadPool(self._reactor, self.pool, function, *args)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()

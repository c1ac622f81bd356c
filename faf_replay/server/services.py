"""The long-lived parts of the server as Twisted services, and their order.

:class:`FafReplayService` is the root: it starts its children and, on
shutdown, stops them in the order that loses nothing (stop accepting, end and
save every game, sync the spool, finish the database work, close the pool,
stop the worker threads). ``MultiService`` alone would stop them all at once.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import ILogObserver

from faf_replay.database.bookkeeper import Bookkeeper
from faf_replay.database.pool import DatabaseMonitor
from faf_replay.replay.registry import GameRegistry
from faf_replay.save.workers import WorkerPool
from faf_replay.server.listening import listening
from faf_replay.spool.sync import SpoolSync, SpoolWriter


class FafReplayService(MultiService):
    def __init__(
        self,
        listeners: dict[str, IService],
        registry: GameRegistry,
        workers: WorkerPool,
        *,
        database: DatabaseMonitor | None = None,
        spool_sync: SpoolSync | None = None,
        spool_writer: SpoolWriter | None = None,
        bookkeeper: Bookkeeper | None = None,
        log_observer: ILogObserver | None = None,
        signals: IService | None = None,
    ) -> None:
        super().__init__()
        #: "game", and "websocket" and "http" when enabled.
        self.listeners = listeners
        self.registry = registry
        self.workers = workers
        self.database = database
        self.spool_sync = spool_sync
        self.spool_writer = spool_writer
        self.bookkeeper = bookkeeper
        self._log_observer = log_observer
        # Signal handling first: once a port listens, a SIGTERM must be a clean stop.
        children = (signals, workers, spool_writer, spool_sync, database, bookkeeper, registry)
        for child in (*children, *listeners.values()):
            if child is not None:
                child.setServiceParent(self)

    @property
    def listener(self) -> IService:
        return self.listeners["game"]

    def listening(self, name: str = "game") -> Deferred:
        return listening(self.listeners[name])

    def setServiceParent(self, parent: Any) -> None:
        # twistd asks its application which log observer to use once the
        # service is attached: that is where --log-format json takes effect.
        if self._log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self._log_observer)
        super().setServiceParent(parent)

    def stopService(self) -> Deferred:
        """Stop accepting, then end and save every game, then the rest, in order."""
        Service.stopService(self)
        d = DeferredList([maybeDeferred(listener.stopService) for listener in self.listeners.values()])
        d.addBoth(lambda _: self.registry.stopService())
        for service in (self.spool_sync, self.bookkeeper, self.database, self.workers, self.spool_writer):
            if service is not None:
                d.addBoth(_stop, service)
        d.addBoth(lambda _: self._stop_the_rest())
        return d

    def _stop_the_rest(self) -> Deferred:
        """Children that need no particular order (the lag probe, signal handling)."""
        return DeferredList([maybeDeferred(child.stopService) for child in self if child.running])


def _stop(_result: object, service: IService) -> object:
    """The next step of a shutdown, whatever the one before came to."""
    return service.stopService()

"""The long-lived parts of the server as Twisted services, and their order.

:class:`FafReplayService` is the root: it starts its children and, on
shutdown, stops them in the order that loses nothing (stop accepting, end and
save every game, sync the spool, finish the database work, close the pool,
stop the worker threads). ``MultiService`` alone would stop them all at once.
"""

from __future__ import annotations

import gc
import resource
import signal
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import ILogObserver, Logger
from twisted.python.threadpool import ThreadPool

from faf_replay import metrics
from faf_replay.bookkeeping import Bookkeeper
from faf_replay.database import DatabaseMonitor
from faf_replay.keepalive import Keepalive
from faf_replay.listening import listening
from faf_replay.registry import GameRegistry
from faf_replay.spool import Spool
from faf_replay.workers import WorkerPool

log = Logger()


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


def freeze_startup_objects() -> None:
    """Take what exists once the server is up (modules, classes, functions:
    never garbage) out of the garbage collector's scans. Python's full
    collections stop the reactor for as long as they take, which grows with
    every object they visit; the frozen ones are no longer visited."""
    gc.collect()
    gc.freeze()
    log.info("garbage collector: {count} startup objects frozen", count=gc.get_freeze_count())


def raise_open_file_limit() -> int:
    """Every connection and every spooled upload is a file descriptor: allow as
    many as the hard limit lets us. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:
            log.warn("cannot raise the open-file limit from {soft}: {why}", soft=soft, why=str(error))
            return soft
    log.info("open-file limit: {limit}", limit=hard)
    return hard


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


class KeepaliveOnListeners(Service):
    """Sets the keepalive options on every listener's socket once it listens."""

    def __init__(self, listeners: dict[str, IService], keepalive: Keepalive) -> None:
        self._listeners = listeners
        self._keepalive = keepalive

    def startService(self) -> None:
        super().startService()
        if not self._keepalive.enabled:
            log.info("TCP keepalive is off: a peer that vanishes is found only when it is written to")
            return
        for name, listener in self._listeners.items():
            listening(listener).addCallback(self._apply, name)

    def _apply(self, port: Any, name: str) -> None:
        sock = getattr(port, "socket", None)
        if sock is None:
            return  # not a TCP port (a unix socket): nothing to probe
        self._keepalive.apply(sock)
        log.info(
            "{name} port {port}: a silent peer is probed after {idle:g} s and closed after {after:g} s",
            name=name,
            port=port.getHost().port,
            idle=self._keepalive.idle,
            after=self._keepalive.detection,
        )


def _stop(_result: object, service: IService) -> object:
    """The next step of a shutdown, whatever the one before came to."""
    return service.stopService()

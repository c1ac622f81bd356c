"""``twistd faf-replay``: the command line and the service tree.

``makeService(options, reactor)`` builds::

    FafReplayService (MultiService; stops its children in order)
    ├── WorkerPool       threads for compression and file I/O
    ├── SpoolSync        fsyncs the spool every --spool-sync seconds
    ├── DatabaseMonitor  with --db: the adbapi pool, checked every 30 s
    ├── GameRegistry     every running game; one timer for all of them
    └── listener         strports endpoint serving ReplayFactory

and on shutdown stops accepting first, then ends and saves every game, then
syncs what stays in the spool, then closes the database pool, then stops the
worker threads.
"""

from __future__ import annotations

import os
import resource
import signal
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from faf_replay import metrics
from faf_replay.bookkeeping import Bookkeeper
from faf_replay.database import Database, DatabaseMonitor
from faf_replay.database_config import DatabaseConfig, DatabaseConfigError
from faf_replay.outbox import Outbox
from faf_replay.protocol import ReplayFactory
from faf_replay.registry import GameRegistry
from faf_replay.saving import Saver
from faf_replay.settings import Settings, SettingsError, load_toml
from faf_replay.spool import Spool, sync_files

log = Logger()
_DEFAULTS = Settings()
_HELP = {
    "port": "strports endpoint for game clients",
    "vault": "directory saved replays go to",
    "delay": "seconds watchers stay behind the game",
    "sample_interval": "seconds between samples of the streams",
    "grace": "seconds without uploaders before a game's write phase ends",
    "forced_end": "seconds after a replay's creation when it is ended",
    "header_timeout": "seconds a connection has to send its P/ or G/ header",
    "quorum": "uploaders that must agree before bytes are merged",
    "zstd_level": "zstd level of saved replays (1-22)",
    "stall_timeout": "seconds the merge waits for one uploader before it stops counting it as a voter",
    "linger": "seconds a watcher's connection stays open after its last byte",
    "drain_timeout": "seconds a saved game waits for slow watchers before closing them",
    "replay_header_timeout": "seconds from P/…\\0 to a complete replay header",
    "max_upload_bytes": "bytes one upload may send",
    "max_uploads_per_game": "uploads one game accepts in its life",
    "max_watchers_per_game": "watchers of one game at once",
    "max_connections_per_address": "open connections from one address",
    "max_connections": "open connections in all",
    "spool": "where uploads are kept until their replay is saved [default: spool beside the vault]",
    "spool_sync": "seconds between fsyncs of the spool",
    "db": "FAF's database, mysql://USER@HOST:PORT/NAME (password from $FAF_REPLAY_DB_PASSWORD)",
    "db_password_file": "a file holding the database password",
    "db_timeout": "seconds a save waits for the database before saving with the replay's own facts",
    "db_check_interval": "seconds between checks that the database is reachable",
    "require_known_game": "refuse uploads for games the database does not know or that ended long ago",
    "known_game_window": "with --require-known-game: seconds after a game's end when uploads are refused",
}
_FLAGS = [name for name in Settings.names() if isinstance(getattr(_DEFAULTS, name), bool)]


def _option(name: str) -> str:
    return name.replace("_", "-")


def _help(name: str) -> str:
    default = getattr(_DEFAULTS, name)
    return (
        _HELP[name] if default is None or "[default" in _HELP[name] else f"{_HELP[name]} [default: {default}]"
    )


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "The live replay server of Forged Alliance Forever."
    optParameters = [
        [_option(name), None, None, _help(name)] for name in Settings.names() if name not in _FLAGS
    ] + [["config", "c", None, "a TOML file with the same keys (the command line wins)"]]
    optFlags = [[_option(name), None, _HELP[name]] for name in _FLAGS]

    database: DatabaseConfig | None = None

    def postOptions(self) -> None:
        values: dict[str, Any] = {}
        if self["config"]:
            try:
                values.update(load_toml(self["config"]))
            except SettingsError as error:
                raise usage.UsageError(str(error)) from None
        for name in Settings.names():
            given = self[_option(name)]
            if name in _FLAGS:
                if given:
                    values[name] = True
            elif given is not None:
                values[name] = given
        try:
            self.settings = Settings.from_values(values)
        except SettingsError as error:
            raise usage.UsageError(str(error)) from None
        try:
            # Parsing only: no reactor is touched and nothing listens yet.
            serverFromString(None, self.settings.port)
        except (ValueError, TypeError) as error:
            raise usage.UsageError(
                f"port {self.settings.port!r} is not an endpoint description: {error}"
            ) from None
        if self.settings.db:
            try:
                self.database = DatabaseConfig.from_settings(
                    self.settings.db, self.settings.db_password_file, os.environ
                )
            except DatabaseConfigError as error:
                raise usage.UsageError(str(error)) from None


class WorkerPool(Service):
    """A thread pool started and stopped with the service tree."""

    def __init__(self, maximum: int = 4) -> None:
        self.pool = ThreadPool(minthreads=0, maxthreads=maximum, name="faf-replay-worker")

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


class SpoolSync(Service):
    """fsyncs the spool files written since the last time, in a worker thread."""

    def __init__(self, spool: Spool, reactor: Any, pool: ThreadPool, interval: float) -> None:
        self.spool = spool
        self._reactor = reactor
        self._pool = pool
        self._loop = LoopingCall(self.sync)
        self._loop.clock = reactor
        self._interval = interval

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._interval, now=False)

    def sync(self) -> Deferred | None:
        files = self.spool.dirty_files()
        if not files:
            return None
        d = deferToThreadPool(self._reactor, self._pool, sync_files, files)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Failure) -> None:
        metrics.spool_errors.inc()
        log.error("cannot fsync the spool: {why}", why=str(failure.value))

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        try:
            sync_files(self.spool.dirty_files())  # what stays for the next run
        except OSError as error:
            self._failed(Failure(error))


class FafReplayService(MultiService):
    def __init__(
        self,
        listener: IService,
        registry: GameRegistry,
        workers: WorkerPool,
        *,
        database: DatabaseMonitor | None = None,
        spool_sync: SpoolSync | None = None,
        bookkeeper: Bookkeeper | None = None,
    ) -> None:
        super().__init__()
        self.listener = listener
        self.registry = registry
        self.workers = workers
        self.database = database
        self.spool_sync = spool_sync
        self.bookkeeper = bookkeeper
        for child in (workers, spool_sync, database, bookkeeper, registry, listener):
            if child is not None:
                child.setServiceParent(self)

    def listening(self) -> Deferred:
        """Fires with the game port's ``IListeningPort`` once it is open.

        A branch of the endpoint service's own Deferred, which must keep its
        result: ``stopService`` needs the port to stop listening.
        """
        branch: Deferred = Deferred()

        def passthrough(result: Any) -> Any:
            branch.callback(result)
            return result

        self.listener._waitingForPort.addCallback(passthrough)  # type: ignore[attr-defined]
        return branch

    def stopService(self) -> Deferred:
        """Stop accepting, then end and save every game, then close the database
        pool, then stop the workers."""
        Service.stopService(self)
        d = maybeDeferred(self.listener.stopService)
        d.addBoth(lambda _: self.registry.stopService())
        if self.spool_sync is not None:
            d.addBoth(lambda _: self.spool_sync.stopService())
        if self.bookkeeper is not None:
            d.addBoth(lambda _: self.bookkeeper.stopService())
        if self.database is not None:
            d.addBoth(lambda _: self.database.stopService())
        d.addBoth(lambda _: self.workers.stopService())
        return d


class ExitCleanlyOnSignal(Service):
    """SIGTERM and SIGINT stop the reactor, and twistd then exits 0.

    Twisted's own handlers make twistd re-raise the signal once the reactor has
    stopped, so the process dies "by SIGTERM" even after a clean shutdown. A
    server that saved every replay has succeeded; say so to the supervisor.
    The handlers go in once the reactor runs (it installs its own first).
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._received)

    def _received(self, number: int, frame: object) -> None:
        log.info("received {signal}: stopping", signal=signal.Signals(number).name)
        self._reactor.callFromThread(self._reactor.stop)


def _raise_open_file_limit() -> None:
    """Every connection and every spooled upload is a file descriptor: allow as
    many as the hard limit lets us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:
            log.warn("cannot raise the open-file limit from {soft}: {why}", soft=soft, why=str(error))
            return
    log.info("open-file limit: {limit}", limit=hard)


def makeService(options: Options, reactor: Any = None) -> FafReplayService:
    """The service tree; ``reactor=None`` means "run by twistd": the global
    reactor, and twistd's signal handling made to exit 0 after a clean stop."""
    under_twistd = reactor is None
    if reactor is None:
        from twisted.internet import reactor  # noqa: PLC0415 - twistd installs it first

        _raise_open_file_limit()
    settings: Settings = options.settings
    try:
        spool = Spool(settings.spool_directory)
    except OSError as error:
        raise SystemExit(
            f"cannot use the spool directory {settings.spool_directory}: {error.strerror}"
        ) from None
    workers = WorkerPool()
    database = Database(options.database, reactor) if options.database is not None else None
    bookkeeper = monitor = None
    if database is not None:
        bookkeeper = Bookkeeper(Outbox(spool.directory / "outbox"), database, reactor, workers.pool)
        monitor = DatabaseMonitor(database, reactor, settings.db_check_interval, on_back=bookkeeper.drain)
    saver = Saver(settings, reactor, workers.pool, database, bookkeeper)
    registry = GameRegistry(settings, reactor, saver.save, database, spool)
    factory = ReplayFactory(registry, reactor)
    listener = strports.service(settings.port, factory, reactor=reactor)
    spool_sync = SpoolSync(spool, reactor, workers.pool, settings.spool_sync)
    service = FafReplayService(
        listener, registry, workers, database=monitor, spool_sync=spool_sync, bookkeeper=bookkeeper
    )
    if under_twistd:
        ExitCleanlyOnSignal(reactor).setServiceParent(service)
    return service

"""``twistd faf-replay``: the command line (``options.py``) and the service tree.

``makeService(options, reactor)`` builds::

    FafReplayService (MultiService; stops its children in order)
    ├── WorkerPool       threads for compression and file I/O
    ├── SpoolSync        fsyncs the spool every --spool-sync seconds
    ├── DatabaseMonitor  with --db: the adbapi pool, checked every --db-check-interval
    ├── Bookkeeper       with --db: the outbox of database work
    ├── GameRegistry     every running game; one timer for all of them
    ├── listener "game"       strports endpoint serving ReplayFactory (TCP), unless off
    ├── listener "websocket"  with --ws-port: the same over WebSocket
    ├── listener "http"       with --http-port: /metrics, /health, /games, /
    └── KeepaliveOnListeners  TCP keepalive on every listening socket

and on shutdown stops accepting first, then ends and saves every game, then
syncs what stays in the spool, then closes the database pool, then stops the
worker threads.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from twisted.application import strports
from twisted.application.service import IService
from twisted.internet.protocol import Factory
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

from faf_replay import metrics
from faf_replay.accept.keepalive import Keepalive
from faf_replay.accept.limits import connections_that_fit
from faf_replay.accept.proxied import ProxyProtocolFactory, listening_description
from faf_replay.accept.replay_protocol import ReplayFactory
from faf_replay.accept.websocket import WebSocketReplayFactory
from faf_replay.database.bookkeeper import Bookkeeper
from faf_replay.database.outbox import Outbox
from faf_replay.database.pool import Database, DatabaseMonitor
from faf_replay.replay.registry import GameRegistry
from faf_replay.replay.vault_replays import VaultReplays
from faf_replay.save.saver import Saver
from faf_replay.save.vault import vault_refusal
from faf_replay.save.workers import WorkerPool
from faf_replay.server import error_reporting
from faf_replay.server.keepalive_on_listeners import KeepaliveOnListeners
from faf_replay.server.lag_probe import ReactorLagProbe
from faf_replay.server.options import Options
from faf_replay.server.process import freeze_startup_objects, raise_open_file_limit
from faf_replay.server.services import FafReplayService
from faf_replay.server.signals import ExitCleanlyOnSignal, hold_stop_signals
from faf_replay.server.web import web_site
from faf_replay.settings import Settings
from faf_replay.spool.files import default_open_files
from faf_replay.spool.spool import Spool
from faf_replay.spool.sync import SpoolSync, SpoolWriter

__all__ = ["Options", "makeService"]

log = Logger()


def makeService(options: Options, reactor: Any = None) -> FafReplayService:
    """The service tree; ``reactor=None`` means "run by twistd": the global
    reactor, the open-file limit raised, and twistd's signal handling made to
    exit 0 after a clean stop."""
    under_twistd = reactor is None
    # Before any thread (Sentry's, the spool's emptier): see hold_stop_signals.
    held = hold_stop_signals() if under_twistd else None
    settings: Settings = options.settings
    for note in options.rust.notes if options.rust is not None else ():
        log.info("{note}", note=note)
    if reactor is None:
        from twisted.internet import reactor  # noqa: PLC0415 - twistd installs it first

        open_files = raise_open_file_limit()
    spool_files = settings.spool_open_files or default_open_files()
    if under_twistd:
        settings = _fit_open_files(settings, open_files, spool_files)
        reactor.callWhenRunning(freeze_startup_objects)
    if settings.sentry_dsn:
        error_reporting.start(settings.sentry_dsn)
    _check_vault(settings.vault)
    spool_writer = SpoolWriter(reactor)
    try:
        spool = Spool(settings.spool_directory, spool_writer.submit, spool_files)
    except OSError as error:
        raise SystemExit(
            f"cannot use the spool directory {settings.spool_directory} as uid {os.geteuid()}: "
            f"{error.strerror}"
        ) from None
    spool.on_error = _spool_error
    workers = WorkerPool(reactor)
    database = None
    if options.database is not None:
        database = Database(options.database, reactor, settings.db_pool_size)
    bookkeeper = monitor = None
    if database is not None:
        bookkeeper = Bookkeeper(Outbox(spool.directory / "outbox"), database, reactor, workers)
        monitor = DatabaseMonitor(database, reactor, settings.db_check_interval, on_back=bookkeeper.drain)
    saver = Saver(settings, reactor, workers, database, bookkeeper)
    vault_replays = VaultReplays(settings.vault, settings.vault_watch_age, workers)
    registry = GameRegistry(settings, reactor, saver.save, database, spool, vault_replays=vault_replays)
    trusted = options.trusted
    factory = ReplayFactory(registry, reactor, trusted)

    def listener(description: str, serving: Factory[Any]) -> IService:
        endpoint, proxied = listening_description(description)
        if proxied:
            serving = ProxyProtocolFactory(serving, trusted, reactor)
        return strports.service(endpoint, serving, reactor=reactor)

    listeners: dict[str, IService] = {}
    if settings.port is not None:
        listeners["game"] = listener(settings.port, factory)
    if settings.ws_port is not None:
        websocket = WebSocketReplayFactory(
            factory,
            reactor,
            handshake_timeout=settings.ws_handshake_timeout,
            hmac_secret=options.hmac_secret,
            hmac_lifetime=settings.ws_hmac_lifetime,
            ping_interval=settings.ws_ping_interval,
            ping_timeout=settings.ws_ping_timeout,
        )
        listeners["websocket"] = listener(settings.ws_port, websocket)
    service = FafReplayService(
        listeners,
        registry,
        workers,
        database=monitor,
        spool_sync=SpoolSync(spool, reactor, settings.spool_sync),
        spool_writer=spool_writer,
        bookkeeper=bookkeeper,
        log_observer=log_observer(settings.log_format, settings.log_level),
        signals=ExitCleanlyOnSignal(reactor, held) if under_twistd else None,
    )
    if settings.http_port is not None:
        site = web_site(service, reactor)
        service.listeners["http"] = listener(settings.http_port, site)
        service.listeners["http"].setServiceParent(service)
    KeepaliveOnListeners(service.listeners, Keepalive.from_settings(settings)).setServiceParent(service)
    ReactorLagProbe(reactor).setServiceParent(service)
    return service


def _check_vault(vault: str) -> None:
    """Say at once when the vault will not take a file (FAF's volume belongs
    to root: a server of another user could write nothing there)."""
    refusal = vault_refusal(vault)
    metrics.vault_writable.set(refusal is None)
    if refusal is not None:
        log.error(
            "the vault {vault} is not writable by uid {uid} ({why}): every save fails, and waits in "
            "the spool, until it is; /health answers 503",
            vault=os.path.abspath(vault),
            uid=os.geteuid(),
            why=refusal,
        )


def _spool_error(error: Exception) -> None:
    metrics.spool_errors.inc()
    log.error("the spool's writer failed: {why}", why=str(error))


def log_observer(log_format: str, level: str) -> ILogObserver | None:
    """Where the lines go: None leaves twistd's own text lines as they are;
    JSON events are one per line (no RFC 7464 separators); a level other than
    info filters either."""
    if log_format == "text" and level == "info":
        return None
    if log_format == "json":
        observer = jsonFileLogObserver(sys.stdout, recordSeparator="")
    else:
        observer = textFileLogObserver(sys.stdout)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    return FilteringLogObserver(observer, [predicate])


def _fit_open_files(settings: Settings, open_files: int, spool_files: int) -> Settings:
    """Lower ``max_connections`` to what the open-file limit holds beside the
    spool's files: past it, accepting fails and spool files cannot reopen."""
    room = connections_that_fit(open_files, spool_files)
    if settings.max_connections <= room:
        return settings
    log.warn(
        "max_connections lowered from {asked} to {room}: the open-file limit is {limit}, "
        "spool files may take {spool} (raise the hard limit for more)",
        asked=settings.max_connections,
        room=room,
        limit=open_files,
        spool=spool_files,
    )
    return dataclasses.replace(settings, max_connections=room)

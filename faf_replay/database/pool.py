"""FAF's database, through ``twisted.enterprise.adbapi`` and mysqlclient.

What the server reads and writes (docs/protocol.md, "Saved file"), as plain functions run in the
pool's threads (``_read_game``, ``_mark_saved``, ``_game_status``): they take
and return plain values, never protocol or registry state. :class:`Database`
runs them: one retry when a pooled connection turns out dead, and a log line
and a counter for every database error. A database that is down never stops
the server; :class:`DatabaseMonitor` says when it goes and comes back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import MySQLdb
from MySQLdb.constants import CLIENT
from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from faf_replay import metrics
from faf_replay.database.config import DatabaseConfig

log = Logger()

#: Client errors that mean "this connection is dead", not "the query is wrong".
_CONNECTION_LOST = {2006, 2013, 2055}
_NO_SUCH_TABLE = 1146
#: Featured mods name tables (``updates_<mod>``): only these names are used.
MOD_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Player:
    login: str | None
    team: int | None
    ai: bool


@dataclass(frozen=True)
class GameRecord:
    """What the database says about one game, as read at save time."""

    game_id: int
    started_at: int | None
    ended_at: int | None
    game_type: str | None
    host: str | None
    title: str | None
    featured_mod: str | None
    map_file: str | None
    players: list[Player] = field(default_factory=list)
    featured_mod_versions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GameStatus:
    ended_at: int | None
    replay_available: bool


# -- the interactions (run in the pool's threads) ---------------------------------


def _read_game(cursor: Any, game_id: int) -> GameRecord | None:
    cursor.execute(
        "SELECT UNIX_TIMESTAMP(gs.startTime), UNIX_TIMESTAMP(gs.endTime), gs.gameType,"
        " host.login, gs.gameName, fm.gamemod, mv.filename"
        " FROM game_stats gs"
        " LEFT JOIN login host ON host.id = gs.host"
        " LEFT JOIN game_featuredMods fm ON fm.id = gs.gameMod"
        " LEFT JOIN map_version mv ON mv.id = gs.mapId"
        " WHERE gs.id = %s",
        (game_id,),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    started, ended, game_type, host, title, mod, map_file = row
    cursor.execute(
        "SELECT l.login, gps.team, gps.AI FROM game_player_stats gps"
        " LEFT JOIN login l ON l.id = gps.playerId"
        " WHERE gps.gameId = %s ORDER BY gps.id",
        (game_id,),
    )
    players = [Player(login, team, bool(ai)) for login, team, ai in cursor.fetchall()]
    return GameRecord(
        game_id=game_id,
        started_at=_seconds(started),
        ended_at=_seconds(ended),
        game_type=None if game_type is None else str(game_type),
        host=host,
        title=title,
        featured_mod=mod,
        map_file=map_file,
        players=players,
        featured_mod_versions=_mod_versions(cursor, mod),
    )


def _mod_versions(cursor: Any, mod: str | None) -> dict[str, int]:
    """Newest version of every file of the featured mod; {} when it has no tables."""
    if mod is None:
        return {}
    if not MOD_NAME.fullmatch(mod):
        return {}  # never a query built from it; metadata.py says so in the log
    try:
        cursor.execute(
            f"SELECT f.fileId, MAX(f.version) FROM `updates_{mod}_files` f"
            f" JOIN `updates_{mod}` u ON u.id = f.fileId GROUP BY f.fileId"
        )
    except MySQLdb.ProgrammingError as error:
        if error.args and error.args[0] == _NO_SUCH_TABLE:
            return {}
        raise
    return {str(file_id): int(version) for file_id, version in cursor.fetchall()}


def _mark_saved(cursor: Any, game_id: int, ticks: int | None) -> int:
    cursor.execute(
        "UPDATE game_stats SET replay_ticks = %s, replay_available = %s WHERE id = %s",
        (ticks, 1, game_id),
    )
    return int(cursor.rowcount)


def _game_status(cursor: Any, game_id: int) -> GameStatus | None:
    cursor.execute(
        "SELECT UNIX_TIMESTAMP(endTime), replay_available FROM game_stats WHERE id = %s",
        (game_id,),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return GameStatus(_seconds(row[0]), bool(row[1]))


def _seconds(value: Any) -> int | None:
    return None if value is None else int(value)


# -- the pool ---------------------------------------------------------------------


class _Connection(adbapi.Connection):
    """adbapi's pooled connection, without its traceback for a dead connection.

    When an interaction fails on a connection that died, rolling back fails
    too; adbapi would log that as an error with a traceback. Here the dead
    connection is just dropped from the pool (the next interaction opens a new
    one) and the interaction's own error goes on to :class:`Database`, which
    logs it once and retries.
    """

    def __init__(self, pool: _Pool) -> None:
        # Every interaction makes one of these in its pool thread before it
        # connects: once the pool is closing, queued work stops here instead of
        # waiting on a database that may not answer (5 s a try, then a retry).
        if pool.closing:
            raise DatabaseClosing("the server is stopping; left for the next start")
        super().__init__(pool)

    def rollback(self) -> None:
        connection = self._connection
        if connection is None:
            return  # never connected: nothing to roll back
        try:
            connection.rollback()
        except MySQLdb.Error:
            self._pool.disconnect(connection)


def _lost_connection(failure: Failure) -> bool:
    if failure.check(adbapi.ConnectionLost):
        return True
    error = failure.check(MySQLdb.OperationalError, MySQLdb.InterfaceError)
    value = failure.value
    return bool(error) and value is not None and bool(value.args) and value.args[0] in _CONNECTION_LOST


class DatabaseError(Exception):
    """A database operation failed (after its retry); ``str()`` says which and why."""


class DatabaseClosing(DatabaseError):
    """The server is stopping: database work still queued is dropped, not
    started (what it was for waits in the outbox for the next start)."""


class _Pool(adbapi.ConnectionPool):
    #: Set as the pool closes; its connections read it (``_Connection``).
    closing = False


class Database:
    def __init__(self, config: DatabaseConfig, reactor: IReactorCore, pool_size: int = 3) -> None:
        self.config = config
        self.pool = _Pool(
            "MySQLdb",
            host=config.host,
            port=config.port,
            user=config.user,
            passwd=config.password,
            db=config.name,
            charset="utf8mb4",
            use_unicode=True,
            # An UPDATE counts the rows it found, not only those it changed: marking a row
            # marked already (a recovered duplicate) still finds the game.
            client_flag=CLIENT.FOUND_ROWS,
            connect_timeout=5,
            read_timeout=30,
            write_timeout=30,
            cp_min=1,
            cp_max=pool_size,
            cp_reconnect=True,
            cp_noisy=False,
            cp_reactor=reactor,
        )
        self.pool.connectionFactory = _Connection

    def run(self, operation: str, interaction: Any, *args: Any) -> Deferred:
        """Run ``interaction(cursor, *args)`` in a pool thread, retrying once on a
        dead connection; fails with :class:`DatabaseError`, logged and counted."""

        def retry_if_lost(failure: Failure) -> Any:
            if _lost_connection(failure) and self.pool.closing:
                return Failure(DatabaseClosing("the server is stopping; left for the next start"))
            if _lost_connection(failure):
                log.info("database connection lost during {operation}; retrying once", operation=operation)
                return self.pool.runInteraction(interaction, *args)
            return failure

        def failed(failure: Failure) -> Failure:
            if failure.check(CancelledError, DatabaseClosing):
                return failure  # the caller stopped waiting, or the server stops: not a database error
            metrics.database_errors.labels(operation).inc()
            reason = _describe(failure)
            log.error("database {operation} failed: {reason}", operation=operation, reason=reason)
            return Failure(DatabaseError(f"{operation}: {reason}"))

        if self.pool.closing:  # a closed pool's threads are gone: nothing queued would run
            return fail(DatabaseClosing("the server is stopping; left for the next start"))
        d = self.pool.runInteraction(interaction, *args)
        d.addErrback(retry_if_lost)
        d.addErrback(failed)
        return d

    def read_game(self, game_id: int) -> Deferred:
        """Fires with the :class:`GameRecord`, or ``None`` when there is no such game."""
        return self.run("read game", _read_game, game_id)

    def mark_saved(self, game_id: int, ticks: int | None) -> Deferred:
        """``replay_available = 1`` and the tick count; fires with the rows found (0: no such game)."""
        return self.run("mark replay saved", _mark_saved, game_id, ticks)

    def game_status(self, game_id: int) -> Deferred:
        """Fires with the :class:`GameStatus`, or ``None`` when there is no such game."""
        return self.run("check game", _game_status, game_id)

    def ping(self) -> Deferred:
        if self.pool.closing:
            return fail(DatabaseClosing("the server is stopping"))
        return self.pool.runInteraction(lambda cursor: cursor.execute("SELECT 1"))

    def close(self) -> None:
        """Close the pool: work already running finishes (bounded by the
        connection's timeouts), work still queued is dropped (``DatabaseClosing``)."""
        self.pool.closing = True
        self.pool.close()


def _describe(failure: Failure) -> str:
    value = failure.value
    if isinstance(value, MySQLdb.Error) and len(value.args) >= 2:
        return f"{value.args[1]} (MySQL error {value.args[0]})"
    return f"{type(value).__name__}: {value}"


class DatabaseMonitor(Service):
    """Checks the database every ``interval`` seconds and logs when it goes down
    or comes back (then calls ``on_back``); owns the pool, closed when the
    service stops."""

    def __init__(
        self,
        database: Database,
        clock: IReactorTime,
        interval: float = 30.0,
        on_back: Callable[[], object] | None = None,
    ) -> None:
        self.database = database
        self.reachable: bool | None = None
        self._on_back = on_back
        self._check = LoopingCall(self.check)
        self._check.clock = clock
        self._interval = interval

    def startService(self) -> None:
        super().startService()
        log.info("using the database {db}", db=self.database.config.describe())
        self._check.start(self._interval, now=True)

    def check(self) -> Deferred:
        d = self.database.ping()
        d.addCallbacks(self._up, self._down)
        return d

    def _up(self, _: object) -> None:
        was = self.reachable
        if was is not True:
            log.info("database {db} is reachable", db=self.database.config.describe())
        self.reachable = True
        if was is False and self._on_back is not None:
            self._on_back()

    def _down(self, failure: Failure) -> None:
        if self.reachable is not False:
            metrics.database_errors.labels("check").inc()
            log.warn(
                "database {db} is unreachable ({reason}); replays are saved with what they tell "
                "until it is back",
                db=self.database.config.describe(),
                reason=_describe(failure),
            )
        self.reachable = False

    def stopService(self) -> None:
        super().stopService()
        if self._check.running:
            self._check.stop()
        self.database.close()

"""The registry: every running game by id, shared by all connections.

Uploaders and watchers find their game here (``upload``/``watch``). The
registry drives time for all games with one timer (games tick in groups spread
over the sample interval), and it remembers recently saved game ids so that a
late uploader cannot start a second, shorter replay of a game that is already
in the vault. Before a game this run has no live copy of starts, it looks in the
vault (a replay saved by an earlier run, or by this one longer ago than it
remembers, is never replaced by a second copy), and with
``--require-known-game`` asks the database too (``admit_upload``). On shutdown
it ends every game and waits until each is saved.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from faf_replay import metrics
from faf_replay.database.pool import Database, DatabaseError, GameStatus
from faf_replay.replay.finished import FinishedReplay, SaveFunction, SaveOutcome
from faf_replay.replay.game import Game, Refusal, State
from faf_replay.replay.stream import UploadStream
from faf_replay.replay.vault_replays import VaultReplays
from faf_replay.save.best_effort import guarded
from faf_replay.settings import Settings
from faf_replay.spool.spool import GameSpool, Spool

log = Logger()

#: Seconds an upload that would start a game waits for the look into the vault (a hung network
#: filesystem must not hold new games back): then it is let in, as when the vault cannot answer.
VAULT_LOOK_TIMEOUT = 2.0


class GameRegistry(Service):
    #: Seconds a saved game's id keeps refusing new uploaders.
    remember_ended = 3600.0

    def __init__(
        self,
        settings: Settings,
        clock: IReactorTime,
        save: SaveFunction,
        database: Database | None = None,
        spool: Spool | None = None,
        *,
        vault_replays: VaultReplays | None = None,
    ) -> None:
        self.settings = settings
        #: Ended games watched from the vault; None: a watcher of an ended game is refused.
        self.vault_replays = vault_replays
        self._clock = clock
        self._save = self._saving_wakes_the_others(save)
        self._database = database
        self._spool = spool
        self._admissions: dict[int, list[Deferred]] = {}
        self.games: dict[int, Game] = {}
        #: The running games by tick group (``game_id % tick_groups``).
        self._groups: list[dict[int, Game]] = [{} for _ in range(self.tick_groups)]
        self._ended: dict[int, float] = {}
        #: Ended games that were cut while their players were connected (``Game.cut``).
        self._cut: set[int] = set()
        self._done_waiters: dict[int, list[Deferred]] = {}
        self._ticker = LoopingCall.withCount(self._tick_groups)
        self._ticker.clock = clock
        self._group = 0

    # -- finding games --------------------------------------------------------

    def game_for_upload(self, game_id: int) -> tuple[Game | None, Refusal | None]:
        """The game an uploader joins, created if needed; or None and why not."""
        game = self.games.get(game_id)
        if game is not None:
            refusal = game.uploader_refusal()
            return (None, refusal) if refusal else (game, None)
        if not self.running:
            return None, Refusal("shutting down", "the server is shutting down")
        if game_id in self._ended:
            return None, Refusal("game ended", "its replay has already been saved")
        game = Game(
            game_id, self.settings, self._clock, self._save, self._game_done, spool=self._game_spool(game_id)
        )
        self._add(game)
        log.info("game {game_id}: replay started", game_id=game_id)
        return game, None

    def _saving_wakes_the_others(self, save: SaveFunction) -> SaveFunction:
        """``save``, and once a file is in the vault, the saves the vault refused try again
        at once instead of after their backoff (up to 5 min): it has room again."""

        def saving(replay: FinishedReplay) -> Deferred:
            return save(replay).addCallback(self._saved_one, replay.game_id)

        return saving

    def _saved_one(self, outcome: object, game_id: int) -> object:
        if outcome is SaveOutcome.SAVED:
            waiting = [game for game in self.games.values() if game.waits_for_room]
            if waiting:
                log.info(
                    "game {game_id}: the vault took its file; {count} replay(s) it refused before "
                    "try again now",
                    game_id=game_id,
                    count=len(waiting),
                )
            for game in waiting:
                game.save_now()
        return outcome

    def _game_spool(self, game_id: int) -> GameSpool | None:
        if self._spool is None:
            return None
        try:
            return self._spool.game(game_id, self._clock.seconds())
        except OSError as error:
            metrics.spool_errors.inc()
            log.error(
                "game {game_id}: cannot create its spool folder ({why}); keeping it in memory",
                game_id=game_id,
                why=str(error),
            )
            return None

    def recover(self) -> None:
        """Bring back the games a previous run left in the spool (a crash, a
        power loss, a save that never succeeded). Each waits ``grace`` seconds
        for its uploaders to come back, then is saved like any other."""
        if self._spool is None:
            return
        for found in self._spool.recover():
            if found.game_id in self.games:
                continue
            streams, why = guarded(
                lambda found=found: [UploadStream.recovered(u.name, u.file) for u in found.uploads]
            )
            why = found.problem or why
            if why is not None or streams is None:
                metrics.quarantined_replays.inc()
                where = found.spool.quarantine(f"cannot recover it: {why}", self._clock.seconds())
                log.error(
                    "game {game_id}: cannot recover it from the spool ({why}); kept in quarantine at {where}",
                    game_id=found.game_id,
                    why=why,
                    where=str(where),
                )
                continue
            game = Game(
                found.game_id,
                self.settings,
                self._clock,
                self._save,
                self._game_done,
                spool=found.spool,
                started_at=found.started_at,
            )
            for stream in streams:
                game.add_recovered(stream)
            self._add(game)
            metrics.recovered_replays.inc()
            log.info(
                "game {game_id}: recovered from the spool ({uploads} upload(s), {size} bytes); "
                "waiting {grace:g} s for its uploaders",
                game_id=found.game_id,
                uploads=len(found.uploads),
                size=sum(upload.file.size for upload in found.uploads),
                grace=self.settings.grace,
            )

    def needs_admission(self, game_id: int) -> bool:
        """Whether an upload for this game must wait for :meth:`admit_upload`: it would
        start a game (this run has none under this id and saved none), and there is a vault
        to look in or a database to ask."""
        if game_id in self.games or game_id in self._ended:
            return False  # joined, or refused at once (game_for_upload)
        return self.vault_replays is not None or self._asks_database

    @property
    def _asks_database(self) -> bool:
        return self.settings.require_known_game and self._database is not None

    def admit_upload(self, game_id: int) -> Deferred:
        """Whether this game may start: fires with None, or why not.

        Not if the vault already holds its replay (a run a deploy or a kill
        stopped saved it; a second copy could never be saved, and would be
        dropped), nor, with ``--require-known-game``, if the database does not
        know the game. Uploads arriving together for one game share one
        question. A vault or a database that cannot answer lets the upload in:
        a replay is worth more than the check.
        """
        waiter: Deferred = Deferred()
        waiting = self._admissions.setdefault(game_id, [])
        waiting.append(waiter)
        if len(waiting) == 1:
            d = self._vault_admission(game_id)
            d.addCallback(self._database_admission, game_id)
            d.addBoth(self._answer_admission, game_id)
        return waiter

    def admission_of(self, game_id: int) -> Deferred | None:
        """Fires once the admission :meth:`admit_upload` is making for this game is decided
        (with the refusal or None); None when none is being made."""
        waiting = self._admissions.get(game_id)
        if not waiting:
            return None
        d: Deferred = Deferred()
        waiting.append(d)
        return d

    def _vault_admission(self, game_id: int) -> Deferred:
        if self.vault_replays is None:
            return succeed(None)
        d = self.vault_replays.holds(game_id)
        d.addTimeout(VAULT_LOOK_TIMEOUT, self._clock)
        d.addCallbacks(
            self._vault_answer, self._vault_unknown, callbackArgs=(game_id,), errbackArgs=(game_id,)
        )
        return d

    def _vault_answer(self, held: bool, game_id: int) -> str | None:
        if not held:
            return None
        log.info(
            "game {game_id}: the vault already holds its replay (saved before); no second copy is started",
            game_id=game_id,
        )
        return "its replay is already in the vault"

    def _vault_unknown(self, failure: Failure, game_id: int) -> None:
        metrics.vault_read_errors.inc()
        if failure.check(defer.TimeoutError):
            why = f"no answer within {VAULT_LOOK_TIMEOUT:g} s"
        elif failure.check(OSError):
            why = str(failure.value)
        else:
            log.failure(
                "game {game_id}: looking in the vault for its replay failed; accepting the upload",
                failure,
                level=LogLevel.error,
                game_id=game_id,
            )
            return
        log.warn(
            "game {game_id}: cannot look in the vault for its replay ({why}); accepting the upload",
            game_id=game_id,
            why=why,
        )

    def _database_admission(self, refusal: str | None, game_id: int) -> Deferred:
        if refusal is not None or not self._asks_database:
            return succeed(refusal)
        assert self._database is not None
        d = self._database.game_status(game_id)
        d.addCallbacks(self._admission, self._admission_unknown, errbackArgs=(game_id,))
        return d

    def _admission(self, status: GameStatus | None) -> str | None:
        if status is None:
            return "the database does not know this game"
        if status.replay_available:
            return "its replay is already saved"
        window = self.settings.known_game_window
        if status.ended_at is not None and status.ended_at < self._clock.seconds() - window:
            return f"it ended more than {window:g} s ago"
        return None

    def _admission_unknown(self, failure: Failure, game_id: int) -> None:
        failure.trap(DatabaseError)
        log.warn(
            "game {game_id}: cannot ask the database whether it is known ({why}); accepting the upload",
            game_id=game_id,
            why=str(failure.value),
        )

    def _answer_admission(self, refusal: str | Failure | None, game_id: int) -> None:
        if isinstance(refusal, Failure):  # a bug: a replay is worth more than the check
            log.failure(
                "game {game_id}: deciding whether it may start failed; accepting the upload",
                refusal,
                level=LogLevel.error,
                game_id=game_id,
            )
            refusal = None
        for waiter in self._admissions.pop(game_id, []):
            waiter.callback(refusal)

    def game_for_watch(self, game_id: int) -> tuple[Game | None, Refusal | None]:
        """The game a watcher joins; or None and why not."""
        game = self.games.get(game_id)
        if game is None:
            return None, Refusal("unknown game", "no live replay")
        if game.no_live_watchers:
            # Its uploads came from the spool at once and its players are gone: the game ends
            # after the grace and would show them whole. The vault serves it after the delay.
            return None, Refusal("recovered game", "recovered from the spool: its players may play on")
        refusal = game.watcher_refusal()
        return (None, refusal) if refusal else (game, None)

    def ended(self, game_id: int) -> bool:
        """No live game takes watchers under this id: never seen by this run, brought back
        from the spool with none of its uploaders back, or its replay is saved (draining or
        done)."""
        game = self.games.get(game_id)
        return game is None or game.state in (State.DRAINING, State.DONE) or game.no_live_watchers

    def vault_hold(self, game_id: int) -> float:
        """Seconds a game's saved replay must have been in the vault before a watcher gets it
        from there: none for a game whose write phase this run saw end with every upload over
        (its players gone); the delay for one cut while its players were connected: saved by
        an earlier run a deploy or a kill stopped (this run never saw it), brought back from
        the spool, or ended by force with uploads connected (docs/protocol.md, "Watching an
        ended game")."""
        game = self.games.get(game_id)
        if game is not None:
            cut = game.cut
        else:
            cut = game_id not in self._ended or game_id in self._cut
        return self.settings.delay if cut else 0.0

    @property
    def from_vault(self) -> bool:
        """Watchers of ended games are served from the vault."""
        return self.vault_replays is not None and self.vault_replays.enabled

    def recently_ended(self) -> dict[int, float]:
        """Games that ended in the last hour and are not live any more: when each ended."""
        return {game_id: at for game_id, at in self._ended.items() if game_id not in self.games}

    def when_done(self, game_id: int) -> Deferred:
        """Fires once the game with this id is saved and its watchers are gone."""
        d: Deferred = Deferred()
        if game_id in self._ended and game_id not in self.games:
            d.callback(None)
        else:
            self._done_waiters.setdefault(game_id, []).append(d)
        return d

    def _add(self, game: Game) -> None:
        self.games[game.game_id] = game
        self._groups[game.game_id % self.tick_groups][game.game_id] = game
        metrics.running_replays.inc()

    def _game_done(self, game: Game) -> None:
        if self.games.get(game.game_id) is game:
            del self.games[game.game_id]
            del self._groups[game.game_id % self.tick_groups][game.game_id]
            metrics.running_replays.dec()
        self._ended[game.game_id] = self._clock.seconds()
        if game.cut:
            self._cut.add(game.game_id)
        for waiter in self._done_waiters.pop(game.game_id, []):
            waiter.callback(None)

    # -- time -----------------------------------------------------------------

    #: Games tick in this many groups spread over a sample interval (by game
    #: id), so that no tick holds the reactor for every game at once.
    tick_groups = 20
    #: A group publishes (merges what the delay allows, tells watchers) this
    #: many group periods after it sampled (read its uploads), a twentieth of
    #: the interval. The delay compares the time of a sample with
    #: ``now - delay`` at a later publish: were both taken at the same point of
    #: their timer call, the few milliseconds a timer runs late would decide, at
    #: random, whether a sample is old enough now or only a whole interval later.
    publish_after = 1

    def _tick_groups(self, count: int) -> None:
        """The timer fired ``count`` group periods after its last call."""
        for _ in range(min(count, self.tick_groups)):
            self._tick_group(self._group)
            self._group = (self._group + 1) % self.tick_groups

    def _tick_group(self, group: int) -> None:
        self._each_game((group - self.publish_after) % self.tick_groups, "publish")
        self._each_game(group, "sample")
        self._after_group(group)

    def _after_group(self, group: int) -> None:
        if self._spool is not None:
            self._spool.send()  # what the group's uploads brought, to the spool's writer
        if group == 0:
            horizon = self._clock.seconds() - self.remember_ended
            for game_id, ended in list(self._ended.items()):
                if ended < horizon:
                    del self._ended[game_id]
                    self._cut.discard(game_id)

    def _each_game(self, group: int, step: str) -> None:
        """``step`` (``sample``, ``publish`` or ``tick``) of every game of ``group``."""
        now = self._clock.seconds()
        for game in list(self._groups[group].values()):
            try:
                getattr(game, step)(now)
            except Exception:
                # One game's trouble (say a spool file that cannot be read back
                # right now) must not stop the timer every game ticks on.
                metrics.tick_errors.inc()
                log.failure("game {game_id}: its tick failed", game_id=game.game_id)

    def tick(self) -> None:
        """Tick every game now, both halves."""
        for group in range(self.tick_groups):
            self._each_game(group, "tick")
            self._after_group(group)

    # -- service --------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.recover()
        self._ticker.start(self.settings.sample_interval / self.tick_groups, now=False)

    def stopService(self) -> Deferred:
        """End every game, wait until each is saved, then close the watchers."""
        super().stopService()
        if self._ticker.running:
            self._ticker.stop()
        games = list(self.games.values())
        if not games:
            return succeed(None)
        log.info("shutting down: ending {count} running replay(s)", count=len(games))
        saves = [game.end("server shutdown") for game in games]

        def close_watchers(_: object) -> None:
            for game in games:
                game.stop_retrying()
                game.close_watchers()

        return DeferredList(saves, consumeErrors=True).addCallback(close_watchers)

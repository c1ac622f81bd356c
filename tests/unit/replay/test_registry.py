"""Tests of ``registry``."""

import random
import statistics
from types import SimpleNamespace

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.finished import SaveOutcome
from faf_replay.replay.game import Refusal
from faf_replay.replay.registry import GameRegistry
from faf_replay.replay.vault_replays import VaultReplays
from faf_replay.server.web import live_games
from faf_replay.spool.spool import Spool
from tests.support.fakes import FakeUploader, FakeWatcher, HeldWorkers, Saves
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import recording, split
from tests.unit.replay.test_game import SETTINGS


def play_a_whole_game(test, game_id: int) -> None:
    """One uploader sends a whole recording and leaves; the game is saved and done."""
    game, _ = test.registry.game_for_upload(game_id)
    uploader = FakeUploader(game)
    game.add_uploader(uploader)
    uploader.send(recording("example"))
    uploader.leave()
    done = test.registry.when_done(game_id)
    test.clock.advance(SETTINGS.grace + 1)
    test.successResultOf(done)


class Registry(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.saves = Saves()
        self.registry = GameRegistry(SETTINGS, self.clock, self.saves)
        self.registry.startService()

    def tearDown(self):
        if self.registry.running:
            self.registry.stopService()

    def test_one_game_per_id(self):
        game, refusal = self.registry.game_for_upload(5)
        self.assertIsNone(refusal)
        self.assertIs(self.registry.game_for_upload(5)[0], game)
        self.assertEqual(self.registry.game_for_watch(5), (game, None))
        self.assertEqual(self.registry.game_for_watch(6), (None, Refusal("unknown game", "no live replay")))

    def test_one_timer_drives_every_game(self):
        header, body = split(recording("example"))
        games = [self.registry.game_for_upload(i)[0] for i in range(3)]
        for game in games:
            uploader = FakeUploader(game)
            game.add_uploader(uploader)
            uploader.send(header + body)
            uploader.leave()
        self.clock.advance(SETTINGS.sample_interval)
        self.assertEqual([g.visible for g in games], [len(body)] * 3)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1 + 3 * 2)  # ticker + grace and forced end each

    def test_bytes_are_shown_as_soon_as_the_delay_allows_though_the_timer_runs_late(self):
        """A timer that runs a few milliseconds late, by a different amount each
        time, must not make a sample wait a whole interval more (it did, about
        every other tick): each byte shows within an interval and a twentieth after
        the delay, and never before it."""
        registry = GameRegistry(SETTINGS.replace(delay=5.0), self.clock, self.saves)
        registry.startService()
        self.addCleanup(registry.stopService)
        late = random.Random(7)
        header, body = split(recording("example"))
        game = registry.game_for_upload(9)[0]
        uploaders = [FakeUploader(game, name) for name in ("a", "b")]
        for uploader in uploaders:
            game.add_uploader(uploader)
            uploader.send(header)
        sent: list[tuple[int, float]] = []  # (body bytes sent, when), waiting to be shown
        behind: list[float] = []  # per write: seconds from the write to its showing, less the delay
        next_write = 0.0
        while self.clock.seconds() < 60:
            due = min(call.getTime() for call in self.clock.getDelayedCalls())
            until = due + late.uniform(0.0, 0.008)
            while next_write <= until:  # FA writes ten times a second
                self.clock.advance(next_write - self.clock.seconds())
                for uploader in uploaders:
                    uploader.send(body[len(uploader.stream.body) : len(uploader.stream.body) + 40])
                sent.append((len(uploaders[0].stream.body), next_write))
                next_write += 0.1
            self.clock.advance(until - self.clock.seconds())
            while sent and sent[0][0] <= game.visible:
                behind.append(self.clock.seconds() - sent.pop(0)[1] - 5.0)
        self.assertGreater(len(behind), 500)
        self.assertGreaterEqual(min(behind), 0.0)  # never early
        self.assertLess(max(behind), SETTINGS.sample_interval * 1.1 + 0.05)
        self.assertLess(statistics.median(behind), 0.8)

    def test_a_failing_game_does_not_stop_the_others(self):
        header, body = split(recording("example"))
        broken, healthy = (self.registry.game_for_upload(i)[0] for i in (1, 2))
        for game in (broken, healthy):
            uploader = FakeUploader(game)
            game.add_uploader(uploader)
            uploader.send(header + body)
            uploader.leave()

        def unreadable(now):
            raise OSError(24, "Too many open files")

        broken.sample = unreadable
        logs = CapturedLogs(self)
        before = metric("replayserver_tick_errors_total")
        for _ in range(3):
            self.clock.advance(SETTINGS.sample_interval)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 3)
        self.assertEqual(healthy.visible, len(body))
        self.assertEqual(metric("replayserver_tick_errors_total") - before, 3)
        self.assertEqual(len(logs.matching("game 1: its tick failed")), 3)

    def test_saved_game_refuses_late_uploaders(self):
        play_a_whole_game(self, 5)
        self.assertNotIn(5, self.registry.games)
        game, why = self.registry.game_for_upload(5)
        self.assertIsNone(game)
        self.assertEqual(why, Refusal("game ended", "its replay has already been saved"))
        self.assertIsNone(self.registry.game_for_watch(5)[0])
        self.successResultOf(self.registry.when_done(5))
        self.assertEqual(len(self.saves.replays), 1)
        # after an hour the id is forgotten
        self.clock.advance(GameRegistry.remember_ended + 1)
        self.assertIsNotNone(self.registry.game_for_upload(5)[0])

    def test_no_new_game_while_shutting_down(self):
        self.saves.hold = True
        self.registry.game_for_upload(1)
        stopping = self.registry.stopService()
        late, why = self.registry.game_for_upload(2)
        self.assertIsNone(late)
        self.assertEqual(why.label, "shutting down")
        self.saves.pending[0].callback(SaveOutcome.SAVED)
        self.successResultOf(stopping)

    def test_ending_game_refuses_uploaders_but_not_watchers(self):
        self.saves.hold = True
        game, _ = self.registry.game_for_upload(5)
        game.end("test")
        self.assertIsNone(self.registry.game_for_upload(5)[0])
        self.assertIs(self.registry.game_for_watch(5)[0], game)

    def test_stop_ends_and_saves_every_game(self):
        self.saves.hold = True
        for game_id in (1, 2):
            game, _ = self.registry.game_for_upload(game_id)
            uploader = FakeUploader(game)
            game.add_uploader(uploader)
            uploader.send(recording("example"))
        watcher = FakeWatcher(self.registry.games[1])
        self.registry.games[1].add_watcher(watcher)
        stopped = self.registry.stopService()
        self.assertNoResult(stopped)
        self.assertEqual(sorted(r.game_id for r in self.saves.replays), [1, 2])
        for d in self.saves.pending:
            d.callback(SaveOutcome.SAVED)
        self.successResultOf(stopped)
        self.assertTrue(watcher.closed)
        self.assertEqual(self.registry.games, {})


class RoomAgain(SynchronousTestCase):
    """Saves the vault refused (a full disk) wait up to 5 min between tries; once another
    game's file is saved, the vault has room again and they try at once (the soak's drains
    after a full vault took minutes)."""

    def setUp(self):
        self.clock = Clock()
        self.outcomes: dict[int, SaveOutcome] = {}
        self.tries: list[int] = []
        self.registry = GameRegistry(SETTINGS, self.clock, self.save)
        self.registry.startService()
        self.addCleanup(lambda: self.registry.running and self.registry.stopService())
        self.logs = CapturedLogs(self)

    def save(self, replay):
        self.tries.append(replay.game_id)
        return succeed(self.outcomes.get(replay.game_id, SaveOutcome.SAVED))

    def end(self, game_id: int, outcome: SaveOutcome) -> None:
        self.outcomes[game_id] = outcome
        game, _ = self.registry.game_for_upload(game_id)
        uploader = FakeUploader(game)
        game.add_uploader(uploader)
        uploader.send(recording("example"))
        game.end("forced end")  # no time passes: no retry is due

    def test_a_saved_file_wakes_the_saves_the_vault_refused(self):
        self.end(1, SaveOutcome.FAILED)
        self.end(2, SaveOutcome.BROKEN)  # its data: trying again fails the same way
        self.assertEqual(self.tries, [1, 2])
        self.outcomes[1] = SaveOutcome.SAVED  # the disk has room again
        self.end(3, SaveOutcome.SAVED)
        self.assertEqual(self.tries, [1, 2, 3, 1])  # at once, long before its retry
        self.assertNotIn(1, self.registry.games)
        self.assertEqual(len(self.logs.matching("1 replay(s) it refused before try again now")), 1)

    def test_no_wake_without_a_file_saved(self):
        self.end(1, SaveOutcome.FAILED)
        self.end(2, SaveOutcome.NOTHING)
        self.assertEqual(self.tries, [1, 2])


class VaultHold(SynchronousTestCase):
    """How long a saved replay waits in the vault before a watcher gets it (docs/protocol.md,
    "Watching an ended game"): at once when this run saw every upload end, the delay when it
    did not (saved by a run a deploy or a kill stopped, or recovered from the spool)."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(10_000)
        self.saves = Saves()
        spool = self.mktemp()
        left = Spool(spool).game(77, 1234.5)  # a game a killed run left in the spool
        left.new_upload("Rowan.SCFAreplay").write(recording("example"))
        vault = VaultReplays(self.mktemp(), 3600, HeldWorkers())  # watchers of ended games from there
        self.registry = GameRegistry(
            SETTINGS, self.clock, self.saves, spool=Spool(spool), vault_replays=vault
        )
        self.registry.startService()
        self.addCleanup(lambda: self.registry.running and self.registry.stopService())

    def listed(self, game_id: int) -> dict:
        """What ``GET /games`` says of the game."""
        games = live_games(SimpleNamespace(registry=self.registry), self.clock.seconds())
        return {game["game_id"]: game for game in games}[game_id]

    def test_a_game_this_run_saw_end_at_once_until_its_id_is_forgotten(self):
        play_a_whole_game(self, 5)
        self.assertEqual(self.registry.vault_hold(5), 0)
        self.clock.advance(GameRegistry.remember_ended + SETTINGS.sample_interval * 2)
        self.assertEqual(self.registry.vault_hold(5), SETTINGS.delay)  # as if never seen

    def test_a_game_this_run_never_saw_after_the_delay(self):
        self.assertEqual(self.registry.vault_hold(6), SETTINGS.delay)

    def test_a_game_ended_by_force_with_its_players_connected_after_the_delay(self):
        game, _ = self.registry.game_for_upload(7)
        uploader = FakeUploader(game)
        game.add_uploader(uploader)
        uploader.send(recording("example"))
        watcher = FakeWatcher(game)
        game.add_watcher(watcher)  # keeps it draining
        self.successResultOf(game.end("forced end"))
        self.assertTrue(self.registry.ended(7))
        self.assertEqual(self.registry.vault_hold(7), SETTINGS.delay)
        self.assertFalse(game.status(self.clock.seconds(), True)["watchable_from_vault"])  # the API
        watcher.close()
        self.clock.advance(SETTINGS.sample_interval * 2)
        self.assertNotIn(7, self.registry.games)  # done: the registry remembers it was cut
        self.assertEqual(self.registry.vault_hold(7), SETTINGS.delay)
        ended = self.listed(7)
        self.assertFalse(ended["watchable_from_vault"])
        self.assertTrue(SETTINGS.delay - 5 < ended["watchable_in"] <= SETTINGS.delay, ended)
        self.clock.advance(ended["watchable_in"])
        ended = self.listed(7)
        self.assertEqual((ended["watchable_from_vault"], ended["watchable_in"]), (True, 0))

    def test_a_player_is_back_once_it_sent_again_what_the_spool_had(self):
        """Not by connecting under its name: anyone may."""
        game = self.registry.games[77]
        watcher = FakeWatcher(game)
        game.add_watcher(watcher)
        stream = recording("example")
        for data in (b"", stream[:-1] + bytes([stream[-1] ^ 1])):  # nothing; all but not the same
            impostor = FakeUploader(game, "Rowan.SCFAreplay")
            game.add_uploader(impostor)
            impostor.send(data)
            impostor.leave()
            self.clock.advance(SETTINGS.sample_interval * 2)
            self.assertTrue(game.cut)
            self.assertEqual(game.visible, 0)
        rowan = FakeUploader(game, "Rowan.SCFAreplay")
        game.add_uploader(rowan)
        rowan.send(stream)
        self.clock.advance(SETTINGS.sample_interval * 2)
        self.assertFalse(game.cut)
        self.assertEqual(game.visible, 0)  # connected: the delay
        rowan.leave()
        self.clock.advance(SETTINGS.sample_interval * 2)
        self.assertEqual(game.visible, len(split(stream)[1]))  # all its players done

    def test_a_recovered_game_its_uploader_came_back_to_is_watched_live(self):
        game = self.registry.games[77]
        uploader = FakeUploader(game)
        game.add_uploader(uploader)
        self.assertFalse(self.registry.ended(77))
        self.assertEqual(self.registry.game_for_watch(77), (game, None))
        watcher = FakeWatcher(game)
        game.add_watcher(watcher)
        uploader.leave()
        self.assertTrue(self.registry.ended(77))
        self.clock.advance(SETTINGS.sample_interval * 2)
        # Its other players were cut by the kill: what came back from the spool keeps the delay.
        self.assertEqual(game.visible, 0)
        self.clock.advance(SETTINGS.grace)
        self.assertEqual(game.visible, 0)

    def test_a_recovered_game_after_the_delay_though_this_run_saved_it(self):
        self.assertIn(77, self.registry.games)
        self.assertTrue(self.registry.ended(77))  # watchers go to the vault, not the live game
        self.assertEqual(self.registry.game_for_watch(77)[1].label, "recovered game")
        self.assertEqual(self.registry.games[77].status(self.clock.seconds())["watchable_in"], SETTINGS.delay)
        done = self.registry.when_done(77)
        self.clock.advance(SETTINGS.grace + 1)
        self.successResultOf(done)
        self.assertEqual([r.game_id for r in self.saves.replays], [77])
        self.assertEqual(self.registry.vault_hold(77), SETTINGS.delay)

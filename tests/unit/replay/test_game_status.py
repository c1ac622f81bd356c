"""What the live-games API says of a game (``replay/game_status.py``)."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.game import Game
from faf_replay.replay.game_status import RATE_SPAN, RATE_STEP, ended_status, stream_rate
from faf_replay.settings import Settings
from tests.support.fakes import FakeUploader, Saves
from tests.support.recordings import recording, split


class StreamRate(SynchronousTestCase):
    def test_bytes_a_second_in_buckets_over_the_last_minutes(self):
        samples = ((1000.0, 0), (1250.0, 5000), (1260.0, 6000), (1290.0, 6000))
        rates = stream_rate(samples, now=1300.0)
        self.assertEqual(len(rates), RATE_SPAN // RATE_STEP)
        self.assertEqual(rates[-6:], [500.0, 100.0, 0.0, 0.0, 0.0, 0.0])  # 0 -> 5000 by 1250, 6000 by 1260
        self.assertEqual(sum(rates) * RATE_STEP, 6000)
        self.assertEqual(stream_rate((), now=5.0), [0.0] * (RATE_SPAN // RATE_STEP))


class Status(SynchronousTestCase):
    def test_map_players_and_the_game_time_watchers_may_see(self):
        clock = Clock()
        game = Game(5, Settings(delay=10, sample_interval=1, grace=30), clock, Saves(), lambda game: None)
        header, body = split(recording("example"))
        uploader = FakeUploader(game)
        game.add_uploader(uploader)
        uploader.send(header + body[:20_000])
        game.tick(clock.seconds())
        status = game.status(clock.seconds())
        self.assertEqual(status["map"], "scmp_016")
        self.assertEqual([p["name"] for p in status["players"]], ["MazorNoob", "dragonite"])
        self.assertEqual(status["ticks"], 0)  # nothing visible before the delay
        for _ in range(12):
            clock.advance(1)
            game.tick(clock.seconds())
        status = game.status(clock.seconds())
        self.assertGreater(status["ticks"], 0)
        self.assertEqual(game.visible, 20_000)
        uploader.send(body[20_000:])
        uploader.leave()
        clock.advance(31)
        game.tick(clock.seconds())
        self.assertEqual(game.status(clock.seconds())["ticks"], 1928)  # the whole game: fafreplay's count


class Ended(SynchronousTestCase):
    def test_a_game_cut_while_its_players_were_connected_is_watchable_after_the_hold(self):
        held = ended_status(5, 100.0, 110.0, True, hold=30.0)
        self.assertEqual((held["watchable_from_vault"], held["watchable_in"]), (False, 20.0))
        later = ended_status(5, 100.0, 131.0, True, hold=30.0)
        self.assertEqual((later["watchable_from_vault"], later["watchable_in"]), (True, 0.0))

    def test_a_game_whose_players_had_left_is_watchable_at_once(self):
        ended = ended_status(6, 100.0, 101.0, True)
        self.assertEqual((ended["watchable_from_vault"], ended["watchable_in"]), (True, 0.0))

    def test_nothing_from_a_vault_that_is_not_watched(self):
        off = ended_status(7, 100.0, 110.0, False, hold=30.0)
        self.assertEqual((off["watchable_from_vault"], off["watchable_in"]), (False, 0.0))

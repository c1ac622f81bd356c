from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.finished import SaveOutcome
from faf_replay.replay.game import Game, State
from faf_replay.save.attempts import SAVE_RETRY_FIRST, SAVE_RETRY_MAX
from faf_replay.settings import Settings
from faf_replay.spool.spool import Spool
from tests.support.fakes import FakeUploader, FakeWatcher, Saves
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import chunks, recording, split
from tests.unit.spool.test_spool import Writer

SETTINGS = Settings(delay=300, sample_interval=1, grace=30, forced_end=18000, stall_timeout=60, quorum=2)


class GameTestCase(SynchronousTestCase):
    settings = SETTINGS

    def setUp(self):
        self.logs = CapturedLogs(self)
        self.clock = Clock()
        self.saves = Saves()
        self.done = []
        self.game = Game(1234, self.settings, self.clock, self.saves, self.done.append)

    def tick(self, seconds: float = 1.0, times: int = 1):
        for _ in range(times):
            self.clock.advance(seconds)
            self.game.tick(self.clock.seconds())

    def uploader(self, name="p.SCFAreplay"):
        uploader = FakeUploader(self.game, name)
        self.assertTrue(self.game.add_uploader(uploader))
        return uploader


class Lifecycle(GameTestCase):
    def test_grace_period_then_save(self):
        stream = recording("example")
        a = self.uploader("Rowan.SCFAreplay")
        a.send(stream)
        a.leave()
        self.tick(29)
        self.assertIs(self.game.state, State.ACCEPTING)
        self.assertEqual(self.game.visible, len(split(stream)[1]))  # all released once nobody uploads
        self.tick(1)
        self.assertIs(self.game.state, State.DONE)
        [saved] = self.saves.replays
        self.assertEqual(saved.header + saved.body_bytes(), stream)
        self.assertEqual(saved.recorder, "Rowan")
        self.assertEqual((saved.started_at, saved.ended_at), (0, 30))
        self.assertEqual(self.done, [self.game])

    def test_uploader_within_grace_joins_the_same_replay(self):
        header, body = split(recording("example"))
        a = self.uploader("first.SCFAreplay")
        a.send(header + body[:1000])
        a.leave()
        self.tick(20)
        b = self.uploader()
        b.send(header + body)
        self.tick(20)
        self.assertIs(self.game.state, State.ACCEPTING)
        b.leave()
        self.tick(30)
        self.assertEqual(self.saves.replays[0].body_bytes(), body)
        self.assertEqual(self.saves.replays[0].recorder, "first")

    def test_grace_counts_from_the_last_uploader(self):
        a, b = self.uploader(), self.uploader()
        a.leave()
        self.tick(40)
        self.assertIs(self.game.state, State.ACCEPTING)
        b.leave()
        self.tick(29)
        self.assertIs(self.game.state, State.ACCEPTING)
        self.tick(1)
        self.assertIsNot(self.game.state, State.ACCEPTING)

    def test_forced_end(self):
        header, body = split(recording("example"))
        a, b = self.uploader(), self.uploader()
        a.send(header + body[:5000])
        b.send(header + body[:6000])
        self.clock.advance(18000)
        self.assertTrue(a.closed and b.closed)
        self.assertIs(self.game.state, State.DONE)
        self.assertEqual(self.saves.replays[0].body_bytes(), body[:6000])
        self.assertFalse(self.game.add_uploader(FakeUploader(self.game)))

    def test_forced_end_keeps_the_delay_for_watchers(self):
        """Uploaders still connected: the game may go on, so watchers stay behind."""
        header, body = split(recording("example"))
        a = self.uploader()
        a.send(header)
        watcher = FakeWatcher(self.game)
        self.game.add_watcher(watcher)
        for second in range(1, 400):
            a.send(body[(second - 1) * 100 : second * 100])
            self.tick()
        self.game.end("server shutdown")
        self.assertEqual(self.saves.replays[0].body_bytes(), body[: 399 * 100])
        self.assertEqual(bytes(watcher.data), header + body[: 99 * 100])
        self.assertTrue(watcher.saw_finished)

    def test_no_uploader_after_the_write_phase(self):
        self.saves.hold = True
        a = self.uploader()
        a.leave()
        self.tick(30)
        self.assertIs(self.game.state, State.SAVING)
        self.assertFalse(self.game.add_uploader(FakeUploader(self.game)))

    def test_end_waits_for_the_save(self):
        self.saves.hold = True
        self.uploader().send(recording("example"))
        first = self.game.end("server shutdown")
        second = self.game.end("again")
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.assertEqual(len(self.saves.replays), 1)
        self.saves.pending[0].callback(SaveOutcome.SAVED)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertIs(self.game.state, State.DONE)
        self.successResultOf(self.game.end("after"))

    def test_a_save_that_raises_is_a_broken_save(self):
        def raising(replay):
            raise RuntimeError("a bug in saving")

        game = Game(1235, self.settings, self.clock, raising, self.done.append)
        uploader = FakeUploader(game)
        game.add_uploader(uploader)
        uploader.send(recording("example"))
        self.assertIs(self.successResultOf(game.end("test")), SaveOutcome.BROKEN)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.logs.matching("game 1235: saving failed")), 1)

    def test_a_refused_save_is_retried_with_backoff(self):
        self.saves.hold = True
        self.uploader().send(recording("example"))
        ended = self.game.end("test")
        self.saves.pending[0].callback(SaveOutcome.FAILED)
        self.assertIs(self.successResultOf(ended), SaveOutcome.FAILED)
        self.assertIs(self.game.state, State.SAVING)
        self.clock.advance(SAVE_RETRY_FIRST - 0.1)
        self.assertEqual(len(self.saves.replays), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.saves.replays), 2)
        self.saves.pending[1].callback(SaveOutcome.FAILED)
        self.clock.advance(SAVE_RETRY_FIRST * 2)
        self.assertEqual(len(self.saves.replays), 3)
        self.assertEqual(self.saves.replays[2].body_bytes(), split(recording("example"))[1])
        self.saves.pending[2].callback(SaveOutcome.SAVED)
        self.assertIs(self.game.state, State.DONE)

    def test_a_save_broken_by_its_data_is_tried_three_times_then_given_up(self):
        self.uploader().send(recording("example"))
        self.saves.outcome = SaveOutcome.BROKEN
        watcher = FakeWatcher(self.game)
        self.game.add_watcher(watcher)
        self.game.end("test")
        self.clock.advance(SAVE_RETRY_FIRST)
        self.assertEqual(len(self.saves.replays), 2)
        self.clock.advance(SAVE_RETRY_FIRST * 2)
        self.assertEqual(len(self.saves.replays), 3)
        self.assertIs(self.game.state, State.DRAINING)  # its watchers may finish
        self.assertEqual(len(self.logs.matching("saving failed 3 times the same way; given up")), 1)
        self.clock.advance(SAVE_RETRY_MAX * 10)
        self.assertEqual(len(self.saves.replays), 3)

    def test_a_crashing_save_is_logged_and_retried(self):
        self.saves.hold = True
        self.uploader().send(recording("example"))
        self.game.end("test")
        self.saves.pending[0].errback(RuntimeError("disk on fire"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIs(self.game.state, State.SAVING)
        self.clock.advance(SAVE_RETRY_FIRST)
        self.assertEqual(len(self.saves.replays), 2)

    def test_end_during_the_backoff_tries_at_once(self):
        self.saves.hold = True
        self.uploader().send(recording("example"))
        self.game.end("test")
        self.saves.pending[0].callback(SaveOutcome.FAILED)
        again = self.game.end("server shutdown")
        self.assertEqual(len(self.saves.replays), 2)
        self.saves.pending[1].callback(SaveOutcome.FAILED)
        self.assertIs(self.successResultOf(again), SaveOutcome.FAILED)
        self.game.stop_retrying()
        self.clock.advance(SAVE_RETRY_MAX * 2)
        self.assertEqual(len(self.saves.replays), 2)

    def test_watchers_drain_after_the_save(self):
        a = self.uploader()
        a.send(recording("example"))
        watcher = FakeWatcher(self.game)
        self.assertTrue(self.game.add_watcher(watcher))
        a.leave()
        self.tick(30)
        self.assertIs(self.game.state, State.DRAINING)
        self.assertFalse(self.game.add_watcher(FakeWatcher(self.game)))
        self.assertEqual(bytes(watcher.data), recording("example"))
        self.assertTrue(watcher.saw_finished)
        self.game.remove_watcher(watcher)
        self.assertIs(self.game.state, State.DONE)

    def test_drain_timeout_closes_slow_watchers(self):
        a = self.uploader()
        a.send(recording("example"))
        watcher = FakeWatcher(self.game)
        self.game.add_watcher(watcher)
        self.game.end("test")
        self.clock.advance(self.settings.drain_timeout - 1)
        self.assertFalse(watcher.closed)
        self.clock.advance(1)
        self.assertTrue(watcher.closed)
        self.assertIs(self.game.state, State.DONE)

    def test_nothing_uploaded(self):
        a = self.uploader()
        a.leave()
        self.tick(30)
        self.assertIsNone(self.saves.replays[0].header)
        self.assertIs(self.game.state, State.DONE)


class Watching(GameTestCase):
    def test_header_is_sent_as_soon_as_known(self):
        header, body = split(recording("example"))
        watcher = FakeWatcher(self.game)
        self.game.add_watcher(watcher)
        a = self.uploader()
        a.send(header[:100])
        self.assertEqual(bytes(watcher.data), b"")
        a.send(header[100:] + body[:10])
        self.assertEqual(bytes(watcher.data), header)  # no tick needed

    def test_first_complete_header_is_the_games(self):
        a, b = self.uploader(), self.uploader()
        header_a, _ = split(recording("diverging_1/0"))
        header_b, _ = split(recording("diverging_1/2"))  # the one header that differs
        self.assertNotEqual(header_a, header_b)
        b.send(header_b)
        a.send(header_a)
        self.assertEqual(self.game.header, header_b)

    def test_body_is_delayed_and_late_joiners_catch_up(self):
        header, body = split(recording("example"))
        a, b = self.uploader(), self.uploader()
        a.send(header)
        b.send(header)
        early = FakeWatcher(self.game)
        self.game.add_watcher(early)
        early.game_updated()
        pieces = chunks(body, [100])
        for second, piece in enumerate(pieces, start=1):
            a.send(piece)
            b.send(piece)
            self.tick()
            # each second adds 100 bytes; watchers trail by 300 s of them
            self.assertEqual(self.game.visible, max(0, min(len(body), (second - 300) * 100)))
            self.assertEqual(bytes(early.data), header + body[: self.game.visible])
        late = FakeWatcher(self.game)
        self.game.add_watcher(late)
        late.game_updated()
        self.assertEqual(bytes(late.data), bytes(early.data))

    def test_delay_is_per_game_not_per_stream(self):
        """Two agreeing players leaving early must not reveal the live game."""
        header, body = split(recording("diverging_1/5"))
        uploaders = [self.uploader(f"{i}.SCFAreplay") for i in range(4)]
        for u in uploaders:
            u.send(header)
        sent_at = {}  # second -> longest body sent
        for second in range(1, 400):
            size = min(len(body), second * 100)
            for index, u in enumerate(uploaders):
                if index < 2 and second == 50:
                    # the defeated team has everything so far and leaves
                    u.leave()
                if index >= 2 or second < 50:
                    u.send(body[len(u.stream.body) : size])
            self.tick()
            sent_at[second] = size
            allowed = sent_at.get(second - 300, 0)
            self.assertLessEqual(self.game.visible, allowed, second)
        self.assertEqual(self.game.visible, sent_at[399 - 300])  # and it does progress

    def test_slice_is_shared_between_watchers(self):
        a = self.uploader()
        a.send(recording("example"))
        a.leave()
        self.tick()
        first = self.game.read(0, self.game.visible)
        self.assertIs(self.game.read(0, self.game.visible), first)
        self.assertEqual(len(first), min(64 * 1024, self.game.visible))


class StallRule(GameTestCase):
    def test_a_silent_uploader_holds_the_replay_back_for_a_bounded_time(self):
        header, body = split(recording("example"))
        talker, silent = self.uploader("talker"), self.uploader("silent")
        talker.send(header)
        silent.send(header)  # then nothing, while staying connected
        pieces = chunks(body, [40])
        for second, piece in enumerate(pieces, start=1):
            talker.send(piece)
            self.tick()
            if second <= 300 + self.settings.stall_timeout:
                # the delay, then at most stall_timeout of waiting for the silent one
                self.assertEqual(self.game.visible, 0, second)
                self.assertFalse(self.game.record(silent).stalled)
        self.assertTrue(self.game.record(silent).stalled)
        self.assertEqual(self.game.visible, (len(pieces) - 300) * 40)
        self.assertEqual(len(self.logs.matching("held the replay back for 60 s")), 1)

    def test_a_dribbling_uploader_cannot_hold_it_back_either(self):
        header, body = split(recording("example"))
        talker, dribbler = self.uploader("talker"), self.uploader("dribbler")
        talker.send(header)
        dribbler.send(header)
        for second in range(1, 500):
            talker.send(body[(second - 1) * 40 : second * 40])
            dribbler.send(body[second - 1 : second])  # one byte a second, always behind
            self.tick()
        self.assertTrue(self.game.record(dribbler).stalled)
        self.assertEqual(self.game.visible, (499 - 300) * 40)

    def test_no_stall_while_the_delay_covers_the_lag(self):
        """An upload that lags behind by more than the stall timeout, but less than
        the delay, and keeps up is never cut: over 1,000 s (past the delay and
        the stall timeout many times) the game is never held back by it."""
        header, body = split(recording("example"))
        a, b = self.uploader("a"), self.uploader("b")
        a.send(header)
        b.send(header)
        for second in range(1, 1001):
            a.send(body[(second - 1) * 40 : second * 40])
            if second % 90 == 0:  # b sends nothing for 89 s, then catches up at once
                b.send(body[len(b.stream.body) : second * 40])
            self.tick()
            self.assertFalse(self.game.record(b).stalled, second)
            self.assertEqual(self.game.visible, max(0, second - 300) * 40, second)
        self.assertEqual(self.logs.matching("held the replay back"), [])

    def test_a_lag_longer_than_the_delay_is_a_stall(self):
        """The opposite: an upload 400 s behind holds the merge back once the delay
        has passed, for the stall timeout and no longer; the game then goes on
        without it."""
        header, body = split(recording("example"))
        a, b = self.uploader("a"), self.uploader("b")
        a.send(header)
        b.send(header)
        for second in range(1, 1001):
            a.send(body[(second - 1) * 40 : second * 40])
            b.send(body[len(b.stream.body) : max(0, second - 400) * 40])
            self.tick()
            if second < 300 + 60:
                self.assertFalse(self.game.record(b).stalled, second)
                self.assertEqual(self.game.visible, 0, second)  # held back: b has nothing yet
        self.assertTrue(self.game.record(b).stalled)
        self.assertEqual(self.game.visible, (1000 - 300) * 40)
        self.assertEqual(len(self.logs.matching("upload 'b' held the replay back for 60 s")), 1)

    def test_an_upload_without_a_replay_header_is_never_waited_for(self):
        header, body = split(recording("example"))
        talker, mute = self.uploader("talker"), self.uploader("mute")
        talker.send(header)
        mute.send(header[:100])
        for second in range(1, 400):
            talker.send(body[(second - 1) * 40 : second * 40])
            self.tick()
        self.assertEqual(self.game.visible, (399 - 300) * 40)

    def test_stalled_uploader_votes_again_when_it_catches_up(self):
        header, body = split(recording("example"))
        a, b = self.uploader(), self.uploader()
        a.send(header)
        b.send(header)
        for second in range(1, 400):
            a.send(body[(second - 1) * 10 : second * 10])
            self.tick()
        self.assertTrue(self.game.record(b).stalled)
        b.send(body[:4000])
        self.tick()
        self.assertFalse(self.game.record(b).stalled)
        self.assertEqual(len(self.logs.matching("caught up after a stall")), 1)

    def test_diverging_uploader_is_dropped_and_the_rest_saved(self):
        uploaders = [self.uploader(f"{i}") for i in range(6)]
        for i, u in enumerate(uploaders):
            for piece in chunks(recording(f"diverging_1/{i}"), [333, 4000, 17]):
                u.send(piece)
        self.tick()
        for u in uploaders:
            u.leave()
        self.tick(30)
        self.assertEqual(self.saves.replays[0].body_bytes(), split(recording("diverging_1/5"))[1])
        self.assertTrue(uploaders[0].stream.dropped and uploaders[2].stream.dropped)
        self.assertEqual(uploaders[0].stream.body, b"")


class SilentUploads(GameTestCase):
    """A silent last upload stops holding the game open; a pause never ends a game."""

    def play(self, *uploaders, body_bytes: int, pieces: int = 10):
        """Every uploader sends the header and ``body_bytes`` of body, a piece a second."""
        header, body = split(recording("example"))
        size = -(-body_bytes // pieces)
        for n, piece in enumerate(chunks(body[:body_bytes], [size])):
            for uploader in uploaders:
                uploader.send((header if n == 0 else b"") + piece)
            self.tick()

    def test_a_frozen_last_upload_ends_the_game_after_the_timeout_and_grace(self):
        header, body = split(recording("example"))
        finished, frozen = self.uploader("finished"), self.uploader("frozen")
        self.play(finished, frozen, body_bytes=20_000)  # 10 s of game
        finished.send(body[20_000:])  # the rest, then the player leaves
        self.tick()
        finished.leave()
        silenced = metric("replayserver_silent_uploads_total")
        self.tick(1, times=int(self.settings.silent_upload_timeout) - 2)
        self.assertEqual(metric("replayserver_silent_uploads_total"), silenced)
        self.tick(1, times=2)  # silent for the timeout since its last byte (second 10)
        self.assertEqual(metric("replayserver_silent_uploads_total"), silenced + 1)
        [line] = self.logs.matching("sent nothing for 300 s after every other upload left")
        self.assertIn("upload 'frozen'", line)
        self.tick(1, times=int(self.settings.grace) - 2)  # the grace runs from second 310
        self.assertIs(self.game.state, State.ACCEPTING)
        self.tick(1, times=2)
        self.assertIs(self.game.state, State.DONE)
        self.assertTrue(frozen.closed)
        self.assertEqual(self.saves.replays[0].header + self.saves.bodies[0], header + body)

    def test_a_long_pause_with_every_player_connected_never_ends_the_game(self):
        _, body = split(recording("example"))
        players = [self.uploader(f"p{n}") for n in range(3)]
        self.play(*players, body_bytes=10_000)
        self.tick(10, times=6 * 60)  # an hour of pause: nobody sends anything
        self.assertIs(self.game.state, State.ACCEPTING)
        players[0].leave()  # one gives up; the other two are still paused
        self.tick(10, times=6 * 60)
        self.assertIs(self.game.state, State.ACCEPTING)
        for player in players[1:]:
            player.send(body[10_000:])
        self.tick()
        for player in players[1:]:
            player.leave()
        self.tick(1, times=int(self.settings.grace) + 1)
        self.assertEqual(self.saves.bodies, [body])
        self.assertEqual(self.logs.matching("sent nothing for"), [])

    def test_a_game_only_one_player_uploads_is_not_ended_by_silence(self):
        """A game against the AI, paused for an hour."""
        alone = self.uploader("alone")
        self.play(alone, body_bytes=5_000)
        self.tick(10, times=6 * 60)
        self.assertIs(self.game.state, State.ACCEPTING)

    def test_a_silent_upload_that_sends_again_holds_the_game_open_again(self):
        _, body = split(recording("example"))
        left, paused = self.uploader("left"), self.uploader("paused")
        self.play(left, paused, body_bytes=10_000)
        left.leave()
        self.tick(1, times=int(self.settings.silent_upload_timeout) + 10)  # silenced; the grace runs
        self.assertEqual(len(self.logs.matching("upload 'paused' from 127.0.0.1:1 sent nothing")), 1)
        paused.send(body[10_000:20_000])
        self.tick(1, times=int(self.settings.grace) + 5)
        self.assertIs(self.game.state, State.ACCEPTING)
        self.assertEqual(len(self.logs.matching("upload 'paused' sends again")), 1)
        paused.send(body[20_000:])
        paused.leave()
        self.tick(1, times=int(self.settings.grace) + 1)
        self.assertEqual(self.saves.bodies, [body])


class SilentUploadsOff(GameTestCase):
    settings = SETTINGS.replace(silent_upload_timeout=0)

    def test_zero_turns_the_rule_off(self):
        left, frozen = self.uploader("left"), self.uploader("frozen")
        left.leave()
        self.tick(10, times=6 * 60)
        self.assertIs(self.game.state, State.ACCEPTING)
        self.assertFalse(frozen.closed)


class OnlyWhatTheSpoolHolds(GameTestCase):
    """Watchers never get a byte a kill -9 could take back: only what some upload still in
    the merge has in its spool file, and the last bytes once the replay is saved."""

    def setUp(self):
        super().setUp()
        self.writer = Writer()
        self.spool = Spool(self.mktemp(), submit=self.writer.submit)
        self.game = Game(
            1234, self.settings, self.clock, self.saves, self.done.append, spool=self.spool.game(1234, 0)
        )
        self.watcher = FakeWatcher(self.game)
        self.game.add_watcher(self.watcher)

    def written(self):
        """The spool's writer catches up with what the uploads handed it."""
        self.spool.send()
        self.writer.run()

    def test_the_delay_shows_nothing_the_disk_does_not_hold(self):
        header, body = split(recording("example"))
        a = self.uploader()
        a.send(header + body)
        self.tick(times=SETTINGS.delay + 1)  # the delay allows it all; the writer is stuck
        self.assertEqual(self.game.merged_length, len(body))
        self.assertEqual(self.game.visible, 0)
        self.written()
        self.tick()
        self.assertEqual(self.game.visible, len(body))
        self.assertEqual(bytes(self.watcher.data), header + body)

    def test_the_last_bytes_once_the_replay_is_saved(self):
        header, body = split(recording("example"))
        half = len(body) // 2
        a = self.uploader()
        a.send(header + body[:half])
        self.tick(times=SETTINGS.delay + 1)
        self.written()
        self.tick()
        self.assertEqual(self.game.visible, half)
        a.send(body[half:])
        a.leave()  # everyone left: no delay any more, but the rest is only in memory
        self.tick()
        self.assertEqual(self.game.visible, half)
        self.saves.hold = True
        self.tick(times=SETTINGS.grace)
        self.assertIs(self.game.state, State.SAVING)
        self.assertEqual((self.game.visible, self.game.write_phase_over), (half, False))
        self.saves.pending[0].callback(SaveOutcome.FAILED)  # the vault refused: not saved yet
        self.assertEqual((self.game.visible, self.game.write_phase_over), (half, False))
        self.assertFalse(self.watcher.saw_finished)
        self.clock.advance(SAVE_RETRY_FIRST)
        self.saves.pending[1].callback(SaveOutcome.SAVED)
        self.assertEqual((self.game.visible, self.game.write_phase_over), (len(body), True))
        self.assertEqual(bytes(self.watcher.data), header + body)
        self.assertTrue(self.watcher.saw_finished)

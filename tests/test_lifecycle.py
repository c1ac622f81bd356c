"""A game's lifecycle in one table (``lifecycle.py``), its diagram, and the
retries of what failed (``retry.py``)."""

from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.accept.replay_protocol import MOVES, Phase, ReplayProtocol
from faf_replay.replay.lifecycle import TRANSITIONS, Lifecycle, State, diagram
from faf_replay.replay.registry import GameRegistry
from faf_replay.replay.stream import UploadStream
from faf_replay.replay.uploads import UploadRecord
from faf_replay.save.retry import Retry
from faf_replay.settings import Settings
from tests.fakes import Saves

DOCS = Path(__file__).resolve().parent.parent / "docs"


class Transitions(SynchronousTestCase):
    def test_the_diagram_is_the_table(self):
        self.assertEqual((DOCS / "lifecycle.dot").read_text(), diagram())
        self.assertIn("quarantined", TRANSITIONS[State.SAVING, State.DRAINING])

    def test_only_the_moves_of_the_table(self):
        lifecycle = Lifecycle()
        self.assertIs(lifecycle.state, State.ACCEPTING)
        for wrong in (State.DRAINING, State.DONE, State.ACCEPTING):
            self.assertRaises(RuntimeError, lifecycle.move, wrong)
        lifecycle.move(State.SAVING)
        lifecycle.move(State.DRAINING)
        self.assertRaises(RuntimeError, lifecycle.move, State.SAVING)
        lifecycle.move(State.DONE)
        self.assertRaises(RuntimeError, lifecycle.move, State.DONE)
        self.assertIs(lifecycle.state, State.DONE)


class Retries(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.tries = 0
        self.retry = Retry(self.clock, self.attempt, first=5, maximum=20)

    def attempt(self):
        self.tries += 1

    def test_the_wait_doubles_up_to_the_maximum(self):
        waits = []
        for _ in range(4):
            waits.append(self.retry.later())
            self.assertEqual(self.retry.later(), waits[-1])  # one at a time
            self.clock.advance(waits[-1] / 2)
            self.assertEqual(self.tries, len(waits) - 1)
            self.clock.advance(waits[-1] / 2)
            self.assertEqual(self.tries, len(waits))
        self.assertEqual(waits, [5, 10, 20, 20])

    def test_cancel_and_reset(self):
        self.retry.later()
        self.assertTrue(self.retry.pending)
        self.assertTrue(self.retry.cancel())
        self.assertFalse(self.retry.cancel())
        self.clock.advance(100)
        self.assertEqual(self.tries, 0)
        self.retry.reset()
        self.assertEqual(self.retry.later(), 5)


class Uploader:
    def __init__(self):
        self.stream = UploadStream("p")
        self.peer = "127.0.0.1:1"


class Records(SynchronousTestCase):
    def test_does_an_upload_still_count(self):
        uploader = Uploader()
        record = UploadRecord(uploader.stream, uploader)
        self.assertEqual(
            (record.connected, record.ended, record.holding, record.voting), (True, False, True, False)
        )
        uploader.stream.header = b"header"  # its replay header is in: it votes
        self.assertTrue(record.voting)
        record.stalled = True
        self.assertFalse(record.voting)
        record.stalled, record.silent = False, True
        self.assertEqual((record.voting, record.holding), (True, False))
        record.end()  # closing: no more bytes, still connected
        self.assertEqual((record.connected, record.voting), (True, False))
        record.paused = True
        record.left()  # gone: nothing to wake at the tick, nothing to hold the game open
        self.assertEqual((record.connected, record.holding, record.silent, record.paused), (False,) * 4)
        recovered = UploadRecord(UploadStream("r"))
        self.assertEqual((recovered.connected, recovered.ended), (False, True))


class ConnectionPhases(SynchronousTestCase):
    def test_a_connection_moves_only_along_the_table(self):
        protocol = ReplayProtocol(GameRegistry(Settings(), Clock(), Saves()), Clock(), lambda: None)
        self.assertIs(protocol.phase, Phase.HEADER)
        self.assertNotIn((Phase.SWITCHED, Phase.HEADER), MOVES)
        self.assertNotIn((Phase.CLOSED, Phase.SWITCHED), MOVES)  # a refused connection stays refused
        protocol.phase = Phase.CLOSED
        self.assertRaises(RuntimeError, protocol._enter, Phase.SWITCHED)

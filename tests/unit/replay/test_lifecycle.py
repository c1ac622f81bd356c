"""A game's lifecycle in one table (``lifecycle.py``), its diagram, and the
retries of what failed (``retry.py``)."""

from twisted.trial.unittest import SynchronousTestCase

from faf_replay.replay.lifecycle import TRANSITIONS, Lifecycle, State, diagram
from tests.support.paths import REPOSITORY

DOCS = REPOSITORY / "docs"


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

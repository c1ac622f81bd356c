"""A game's lifecycle: its states and the moves allowed between them.

``TRANSITIONS`` is the one statement of the lifecycle: :class:`~faf_replay.replay.game.Game`
moves only through :meth:`Lifecycle.move`, which refuses any other move, and
``docs/lifecycle.dot`` is :func:`diagram` (a test says so). No Twisted here.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    ACCEPTING = "accepting"
    SAVING = "saving"
    DRAINING = "draining"
    DONE = "done"


#: Every move a game makes, and what makes it.
TRANSITIONS: dict[tuple[State, State], str] = {
    (State.ACCEPTING, State.SAVING): "no upload holding it for grace s · forced end · shutdown",
    (State.SAVING, State.SAVING): "the vault refused: retried after 5 s … 5 min",
    (State.SAVING, State.DRAINING): "saved · already there · nothing to save · quarantined",
    (State.DRAINING, State.DONE): "last watcher gone · drain timeout",
}

#: What a game starts as, and what starts it.
START = (State.ACCEPTING, "first uploader, or found in the spool")


class Lifecycle:
    def __init__(self) -> None:
        self.state = START[0]

    def move(self, to: State) -> None:
        """Move to ``to``; a move ``TRANSITIONS`` does not allow is a bug, raised."""
        if (self.state, to) not in TRANSITIONS:
            raise RuntimeError(f"a game cannot move from {self.state.name} to {to.name}")
        self.state = to


_COLOURS = {
    State.ACCEPTING: "#dbe9f6",
    State.SAVING: "#fff2cc",
    State.DRAINING: "#e2f0d9",
    State.DONE: "#eeeeee",
}
_NODE = 'node [shape=box, style="rounded,filled", fillcolor="#f5f5f5", fontname="Helvetica", fontsize=11];'


def diagram() -> str:
    """``docs/lifecycle.dot``, from :data:`TRANSITIONS`."""

    def label(text: str) -> str:
        return text.replace(" · ", "\\n")

    lines = [
        "// A game's lifecycle: faf_replay.replay.lifecycle.diagram(), from its TRANSITIONS.",
        "// Render: dot -Tsvg lifecycle.dot -o lifecycle.svg",
        "digraph lifecycle {",
        "    rankdir=LR;",
        f"    {_NODE}",
        '    edge [fontname="Helvetica", fontsize=9];',
        "    start [shape=point, width=0.15];",
        *(f'    {state.name} [fillcolor="{_COLOURS[state]}"];' for state in State),
        f'    start -> {START[0].name} [label="{label(START[1])}"];',
        *(f'    {a.name} -> {b.name} [label="{label(why)}"];' for (a, b), why in TRANSITIONS.items()),
        "}",
    ]
    return "\n".join(lines) + "\n"

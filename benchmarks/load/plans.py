"""What the load is: every game's uploaders and watchers, and each generator's share.

A plan crosses into the generator processes as JSON (:meth:`GeneratorSpec.to_json`,
:meth:`GeneratorSpec.from_json`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class UploaderPlan:
    name: str
    #: Where (a fraction of the stream) its bytes start to differ from the others', or None.
    diverge_at: float | None = None
    #: Where (a fraction of the stream) it leaves: 1.0 sends it all.
    leave_at: float = 1.0


@dataclass(frozen=True)
class GamePlan:
    id: int
    recording: str
    size: int
    vary: bool
    uploaders: tuple[UploaderPlan, ...]
    #: When each watcher joins, in seconds after the start.
    watchers: tuple[float, ...]

    @classmethod
    def from_dict(cls, data: dict) -> GamePlan:
        uploaders = tuple(UploaderPlan(**plan) for plan in data["uploaders"])
        return cls(**{**data, "uploaders": uploaders, "watchers": tuple(data["watchers"])})


@dataclass(frozen=True)
class GeneratorSpec:
    host: str
    port: int
    games: tuple[GamePlan, ...]
    #: When every generator starts (wall clock), so that they start together.
    start_at: float
    #: Seconds between two writes of an upload.
    interval: float
    #: Bytes per second per uploader, or None when ``acceleration`` paces by the replay's ticks.
    rate: float | None
    acceleration: float | None
    timeout: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> GeneratorSpec:
        data = json.loads(text)
        return cls(**{**data, "games": tuple(GamePlan.from_dict(game) for game in data["games"])})


def plan_games(args: argparse.Namespace, first_id: int = 1_000_000) -> list[GamePlan]:
    """The games of a run: in every ``--diverging``-th game one uploader diverges halfway, in
    every ``--early``-th one leaves early; the first watcher joins at once, the others late."""
    games = []
    for n in range(args.games):
        uploaders = []
        for u in range(args.uploaders):
            diverges = bool(args.diverging) and n % args.diverging == 0 and u == args.uploaders - 1
            leaves = bool(args.early) and n % args.early == 0 and u == 0
            uploaders.append(
                UploaderPlan(
                    f"u{u}",
                    diverge_at=0.5 if diverges and args.uploaders >= 3 else None,
                    leave_at=0.6 if leaves else 1.0,
                )
            )
        watchers = tuple(0.5 if w == 0 else args.late_watchers_after for w in range(args.watchers))
        games.append(GamePlan(first_id + n, args.recording, args.size, args.vary, tuple(uploaders), watchers))
    return games

"""Small stand-ins for the game's neighbours: uploaders, watchers, saving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed

from faf_replay.replay.finished import FinishedReplay, SaveOutcome
from faf_replay.replay.game import Game


class FakeUploader:
    def __init__(self, game: Game, name: str = "player.SCFAreplay") -> None:
        self.game = game
        self.stream = game.new_stream(name)  # spooled when the game has a spool
        self.peer = "127.0.0.1:1"
        self.closed = False

    def send(self, data: bytes) -> None:
        if self.stream.feed(data):
            self.game.header_complete(self.stream)

    def leave(self) -> None:
        self.game.uploader_left(self)

    def close(self) -> None:
        self.closed = True

    def resume(self) -> None:
        pass

    def drain(self) -> None:
        pass


class FakeWatcher:
    """Pulls everything visible whenever the game says so, as a fast watcher would."""

    def __init__(self, game: Game) -> None:
        self.game = game
        self.data = bytearray()
        self.header_sent = False
        self.position = 0
        self.closed = False
        self.saw_finished = False

    def game_updated(self) -> None:
        game = self.game
        if not self.header_sent and game.header is not None:
            self.data += game.header
            self.header_sent = True
        if self.header_sent:
            while self.position < game.visible:
                chunk = game.read(self.position, game.visible)
                self.position += len(chunk)
                self.data += chunk
        self.saw_finished = game.write_phase_over

    def close(self) -> None:
        self.closed = True
        self.game.remove_watcher(self)


class Saves:
    """Records every save; succeeds at once unless told to hold."""

    def __init__(self, hold: bool = False, outcome: SaveOutcome = SaveOutcome.SAVED) -> None:
        self.replays: list[FinishedReplay] = []
        #: Each replay's merged body, read at save time (a spool is gone after).
        self.bodies: list[bytes] = []
        self.pending: list[Deferred] = []
        self.hold = hold
        self.outcome = outcome

    def __call__(self, replay: FinishedReplay) -> Deferred:
        self.replays.append(replay)
        self.bodies.append(replay.body_bytes())
        if self.hold:
            d: Deferred = Deferred()
            self.pending.append(d)
            return d
        return succeed(self.outcome)


class HeldWorkers:
    """Runs nothing until the test says: ``finish()`` runs every pending call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred]] = []

    def run(self, function: Callable[..., Any], *args: Any) -> Deferred:
        d: Deferred = Deferred()
        self.calls.append((function, args, d))
        return d

    def finish(self) -> None:
        calls, self.calls = self.calls, []
        for function, args, d in calls:
            try:
                d.callback(function(*args))
            except Exception as error:  # what a worker thread hands back
                d.errback(error)

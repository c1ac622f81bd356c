"""A game's watchers: who is watching, and telling them all at once. No Twisted here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Watcher(Protocol):
    def game_updated(self) -> None:
        """More of the replay can be sent, or the game finished."""

    def close(self) -> None: ...


class Watchers:
    def __init__(self) -> None:
        self._watching: set[Watcher] = set()
        #: The most that watched at once.
        self.peak = 0

    def __len__(self) -> int:
        return len(self._watching)

    def __iter__(self) -> Iterator[Watcher]:
        return iter(list(self._watching))

    def add(self, watcher: Watcher) -> None:
        self._watching.add(watcher)
        self.peak = max(self.peak, len(self._watching))

    def remove(self, watcher: Watcher) -> None:
        self._watching.discard(watcher)

    def notify(self) -> None:
        """More can be sent, or the game finished: every watcher is told."""
        for watcher in self:
            watcher.game_updated()

    def close_all(self) -> None:
        for watcher in self:
            watcher.close()

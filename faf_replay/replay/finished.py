"""A game whose write phase is over, as saving sees it: the one thing that
passes from the game to ``save/saver.py``, and what saving answers. No Twisted here
(but the Deferred a save function returns).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred


class Body(Protocol):
    """Bytes-like: ``bytes``, or a :class:`~faf_replay.replay.stream.BodyView` of a spooled upload."""

    def __len__(self) -> int: ...
    def __getitem__(self, key: slice) -> bytes | bytearray: ...


@dataclass(frozen=True)
class FinishedReplay:
    """What saving needs to know of a game whose write phase is over."""

    game_id: int
    header: bytes | None
    body: Body
    recorder: str
    started_at: float
    ended_at: float
    #: Merged body bytes; all of ``body`` when not given.
    body_length: int | None = None
    #: Brought back from the spool after a restart.
    recovered: bool = False

    @property
    def length(self) -> int:
        """Bytes of the merged body."""
        return len(self.body) if self.body_length is None else self.body_length

    def body_bytes(self) -> bytes:
        """The merged body; may read the spool, so call it off the reactor thread."""
        return bytes(self.body[0 : self.length])


class SaveOutcome(enum.Enum):
    SAVED = "saved"  # the file is in the vault
    EXISTS = "exists"  # a replay of this game was there already; nothing written
    NOTHING = "nothing"  # no upload completed a replay header
    FAILED = "failed"  # the vault refused: try again later, the spool keeps the data
    BROKEN = "broken"  # the data itself made it fail: trying again fails the same way


SaveFunction = Callable[[FinishedReplay], Deferred]

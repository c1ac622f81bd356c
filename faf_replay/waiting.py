"""Whom a game waits for, decided at every tick.

Two rules keep one upload from holding a whole game back (``docs/protocol.md``: "Merging the
uploads" and "When a game's write phase ends"):

- the **stall rule** (``merge.StallRule``): the merge stops waiting for a voter
  that held it back for ``stall_timeout``, until its data catches up;
- the **silence rule** (``silence.SilenceRule``): the write phase stops waiting
  for the last connected upload when it has been silent for
  ``silent_upload_timeout`` after every other upload left.

:class:`Waiting` applies them for one :class:`~faf_replay.game.Game`, with their
log lines and metrics; the game acts on what they decide (merging again,
starting its grace period). Logging aside, no Twisted here.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from twisted.logger import Logger

from faf_replay import metrics
from faf_replay.merge import QuorumMerge, StallRule
from faf_replay.settings import Settings
from faf_replay.silence import SilenceRule
from faf_replay.stream import UploadStream

log = Logger()


class Waiting:
    def __init__(self, game_id: int, settings: Settings) -> None:
        self.game_id = game_id
        self._stall: StallRule[UploadStream] = StallRule(settings.stall_timeout)
        self._silence = SilenceRule(settings.silent_upload_timeout)
        #: Connected uploads that no longer hold the write phase open.
        self.silent: set[Any] = set()

    def stalls(self, now: float, merge: QuorumMerge, streams: list[UploadStream]) -> bool:
        """Stop waiting for uploads that held the merge back too long; True if any."""
        for stream in streams:
            if stream.stalled and len(stream.body) > merge.length:
                stream.stalled = False
                log.info(
                    "game {game_id}: upload {name!r} caught up after a stall; it votes again",
                    game_id=self.game_id,
                    name=stream.name,
                )
        overdue = self._stall.update(now, merge.waiting_on, merge.wanted)
        for stream in overdue:
            stream.stalled = True
            metrics.stalled_uploads.inc()
            log.warn(
                "game {game_id}: upload {name!r} held the replay back for {timeout:g} s; "
                "no longer waiting for it",
                game_id=self.game_id,
                name=stream.name,
                timeout=self._stall.timeout,
            )
        return bool(overdue)

    def silences(self, now: float, uploads: Collection[Any], *, others_left: bool) -> None:
        """Update :attr:`silent`: a silent last upload stops holding the game
        open, one that sends again holds it again."""
        by_stream = {id(uploader.stream): uploader for uploader in uploads}
        silenced, speaking = self._silence.judge(now, [uploader.stream for uploader in uploads], others_left)
        for stream in silenced:
            uploader = by_stream[id(stream)]
            self.silent.add(uploader)
            metrics.silent_uploads.inc()
            log.warn(
                "game {game_id}: upload {name!r} from {peer} sent nothing for {timeout:g} s after every "
                "other upload left; the game no longer waits for it",
                game_id=self.game_id,
                name=uploader.stream.name,
                peer=getattr(uploader, "peer", "?"),
                timeout=self._silence.timeout,
            )
        for stream in speaking:
            uploader = by_stream[id(stream)]
            self.silent.discard(uploader)
            log.info(
                "game {game_id}: upload {name!r} sends again; the game waits for it again",
                game_id=self.game_id,
                name=uploader.stream.name,
            )

"""Whom a game waits for, decided at every tick.

Two rules keep one upload from holding a whole game back (``docs/protocol.md``: "Merging the
uploads" and "When a game's write phase ends"):

- the **stall rule** (``merge.StallRule``): the merge stops waiting for a voter
  that held it back for ``stall_timeout``, until its data catches up;
- the **silence rule** (``silence.SilenceRule``): the write phase stops waiting
  for the last connected upload when it has been silent for
  ``silent_upload_timeout`` after every other upload left.

:class:`Waiting` applies them for one :class:`~faf_replay.replay.game.Game`, with their
log lines and metrics; the game acts on what they decide (merging again,
starting its grace period). What they decide is kept on each upload's record
(``uploads.UploadRecord``: ``stalled``, ``silent``). Logging aside, no Twisted here.
"""

from __future__ import annotations

from twisted.logger import Logger

from faf_replay import metrics
from faf_replay.replay.merge import QuorumMerge, StallRule
from faf_replay.replay.silence import SilenceRule
from faf_replay.replay.uploads import UploadRecord
from faf_replay.settings import Settings

log = Logger()


class Waiting:
    def __init__(self, game_id: int, settings: Settings) -> None:
        self.game_id = game_id
        self._stall: StallRule[UploadRecord] = StallRule(settings.stall_timeout)
        self._silence = SilenceRule(settings.silent_upload_timeout)

    def stalls(self, now: float, merge: QuorumMerge[UploadRecord], uploads: list[UploadRecord]) -> bool:
        """Stop waiting for uploads that held the merge back too long; True if any."""
        for upload in uploads:
            if upload.stalled and len(upload.body) > merge.length:
                upload.stalled = False
                log.info(
                    "game {game_id}: upload {name!r} caught up after a stall; it votes again",
                    game_id=self.game_id,
                    name=upload.name,
                )
        overdue = self._stall.update(now, merge.waiting_on, merge.wanted)
        for upload in overdue:
            upload.stalled = True
            metrics.stalled_uploads.inc()
            log.warn(
                "game {game_id}: upload {name!r} held the replay back for {timeout:g} s; "
                "no longer waiting for it",
                game_id=self.game_id,
                name=upload.name,
                timeout=self._stall.timeout,
            )
        return bool(overdue)

    def silences(self, now: float, connected: list[UploadRecord], *, others_left: bool) -> None:
        """A silent last upload stops holding the game open, one that sends
        again holds it again (``UploadRecord.silent``)."""
        silenced, speaking = self._silence.judge(now, connected, others_left)
        for upload in silenced:
            metrics.silent_uploads.inc()
            log.warn(
                "game {game_id}: upload {name!r} from {peer} sent nothing for {timeout:g} s after every "
                "other upload left; the game no longer waits for it",
                game_id=self.game_id,
                name=upload.name,
                peer=upload.uploader.peer if upload.uploader is not None else "?",
                timeout=self._silence.timeout,
            )
        for upload in speaking:
            log.info(
                "game {game_id}: upload {name!r} sends again; the game waits for it again",
                game_id=self.game_id,
                name=upload.name,
            )

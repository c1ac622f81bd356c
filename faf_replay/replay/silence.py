"""Which upload may keep a game's write phase open while it sends nothing.

A game's write phase lasts while an upload is connected. A player whose
machine still answers TCP but whose game froze would hold it open until the
forced end, five hours on, with the replay unsaved. But silence alone means
nothing: FA sends nothing while a game is paused, however long, and every
connected player is then silent together. So the rule is narrow:

    An upload that has sent nothing for ``timeout`` seconds, while it is the
    only upload of its game still connected and at least one other upload of
    the game has left, stops holding the write phase open.

The game then ends as if it had left (after the grace period), with
everything merged; if it sends again first, it holds the game open again.
A pause with two players still connected, or a game only one player ever
uploaded (a game against the AI, paused for lunch), never ends early. A player
who vanished without a word is found sooner by TCP keepalive
(``keepalive.py``); this rule is for the one whose machine still answers.
What the rule knows of an upload it keeps on the upload's record
(``uploads.UploadRecord``: ``heard``, ``quiet_since``, ``silent``). No Twisted here.
"""

from __future__ import annotations

from typing import Protocol, TypeVar


class Upload(Protocol):
    @property
    def received(self) -> int:
        """Every byte it sent so far."""
        ...

    #: ``received`` when last looked at, and since when it has not grown.
    heard: int
    quiet_since: float | None
    #: The rule said it no longer holds the write phase open.
    silent: bool


U = TypeVar("U", bound=Upload)


class SilenceRule:
    def __init__(self, timeout: float) -> None:
        #: 0: the rule is off.
        self.timeout = timeout

    def judge(self, now: float, connected: list[U], others_left: bool) -> tuple[list[U], list[U]]:
        """Called at every tick with the game's connected uploads: those that
        stop holding the game open now, and those that hold it again (they
        sent something since). Sets their ``silent``."""
        silenced: list[U] = []
        speaking: list[U] = []
        for upload in connected:
            if upload.quiet_since is None or upload.received != upload.heard:
                upload.heard, upload.quiet_since = upload.received, now
            if upload.silent:
                if upload.quiet_since == now:
                    upload.silent = False
                    speaking.append(upload)
            elif (
                self.timeout
                and len(connected) == 1
                and others_left
                and now - upload.quiet_since >= self.timeout
            ):
                upload.silent = True
                silenced.append(upload)
        return silenced, speaking

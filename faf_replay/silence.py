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
No Twisted here.
"""

from __future__ import annotations

from typing import Protocol


class Upload(Protocol):
    #: Every byte it sent so far.
    received: int


class SilenceRule:
    def __init__(self, timeout: float) -> None:
        #: 0: the rule is off.
        self.timeout = timeout
        self._heard: dict[int, tuple[int, float]] = {}  # id(upload) -> (received, when it last grew)
        self._silent: set[int] = set()

    def judge(
        self, now: float, connected: list[Upload], others_left: bool
    ) -> tuple[list[Upload], list[Upload]]:
        """Called at every tick with the game's connected uploads: those that
        stop holding the game open now, and those that hold it again (they
        sent something since)."""
        keys = {id(upload) for upload in connected}
        for key in [key for key in self._heard if key not in keys]:
            del self._heard[key]
        self._silent &= keys
        silenced, speaking = [], []
        for upload in connected:
            key = id(upload)
            received, since = self._heard.get(key, (upload.received, now))
            if upload.received != received:
                since = now
            self._heard[key] = (upload.received, since)
            if key in self._silent:
                if since == now:
                    self._silent.discard(key)
                    speaking.append(upload)
            elif self.timeout and len(connected) == 1 and others_left and now - since >= self.timeout:
                self._silent.add(key)
                silenced.append(upload)
        return silenced, speaking

"""Pings on a WebSocket: a silent connection kept open, a vanished peer found.

FA opens its upload (through the FAF client's relay) when it starts, in the
lobby, and sends nothing until its game begins; Cloudflare closes a WebSocket
after 100 s without traffic, and the relay never reconnects. So a WebSocket
we have heard nothing from for ``ws_ping_interval`` seconds gets a ping (one
that speaks needs none: it is neither idle nor gone). Every WebSocket client
answers a ping by itself (browsers, reactor-netty, autobahn, Qt).

A ping left unanswered for ``ws_ping_timeout`` seconds, with nothing else
heard from the peer, is the verdict "no pong": the peer vanished. But only
once the ping has surely left us: while the kernel still holds bytes for the
peer that it has not acknowledged, the ping may wait behind them (a watcher
that reads slowly, or has paused), and such a peer is judged by the rules made
for it, the watcher stall rule and ``TCP_USER_TIMEOUT``, not by its pongs.
Behind a proxy, which acknowledges everything at once, a dead client is thus
found one timeout after its ping.

Timed on the reactor's clock (``clock``), one timer per connection; the
WebSocket protocol (``websocket.py``) feeds it what it hears.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Pings:
    """The pings of one WebSocket connection."""

    __slots__ = (
        "_call",
        "_clock",
        "_heard_at",
        "_send",
        "_sent",
        "_sent_at",
        "_unacknowledged",
        "_vanished",
        "_waiting",
        "interval",
        "timeout",
    )

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        timeout: float,
        *,
        send: Callable[[bytes], None],
        unacknowledged: Callable[[], int | None],
        vanished: Callable[[], None],
    ) -> None:
        self._clock = clock
        self.interval = interval
        self.timeout = timeout
        self._send = send
        self._unacknowledged = unacknowledged
        self._vanished = vanished
        self._call: IDelayedCall | None = None
        self._heard_at = clock.seconds()
        self._sent = 0  # pings sent: the next one's payload
        self._sent_at = 0.0
        #: The payload of the ping that waits for its pong.
        self._waiting: bytes | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._later(self.interval)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def heard(self) -> None:
        """The peer sent something: it is there, and the connection is not idle."""
        self._heard_at = self._clock.seconds()

    def pong(self, payload: bytes) -> None:
        if self._waiting is None or payload != self._waiting:
            return  # unsolicited, or the answer to a ping we no longer wait for
        self._waiting = None
        self.stop()
        self._later(self._sent_at + self.interval - self._clock.seconds())

    def _later(self, seconds: float) -> None:
        self._call = self._clock.callLater(max(seconds, 0.0), self._due)

    def _due(self) -> None:
        self._call = None
        if self._waiting is None:
            self._idle_check()
        else:
            self._pong_overdue()

    def _idle_check(self) -> None:
        now = self._clock.seconds()
        if now - self._heard_at < self.interval:  # it spoke lately: no ping needed yet
            self._later(self._heard_at + self.interval - now)
            return
        self._sent += 1
        self._waiting = self._sent.to_bytes(8, "big")
        self._sent_at = now
        self._send(self._waiting)
        self._later(self.timeout)

    def _pong_overdue(self) -> None:
        if self._heard_at > self._sent_at:  # no pong, but the peer spoke: it is there
            self._waiting = None
            self._later(self._heard_at + self.interval - self._clock.seconds())
            return
        queued = self._unacknowledged()
        if queued:  # the ping may still wait behind what the peer has not taken
            self._later(self.timeout)
            return
        self._vanished()

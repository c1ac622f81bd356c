"""Pings on a WebSocket: a silent connection kept open, a vanished peer found.

FA opens its upload (through the FAF client's relay) when it starts, in the
lobby, and sends nothing until its game begins; Cloudflare closes a WebSocket
after 100 s without traffic, and the relay never reconnects. So a WebSocket
we have heard nothing from for ``ws_ping_interval`` seconds gets a ping (one
that speaks needs none: it is neither idle nor gone). Every WebSocket client
answers a ping by itself (browsers, reactor-netty, autobahn, Qt).

A ping left unanswered for ``ws_ping_timeout`` seconds, with nothing else
heard from the peer, is the verdict "no pong": the peer vanished. One
exception keeps a slow reader alive: when the peer acknowledged more of what we
sent than the ping itself (``TCP_INFO``), the ping may still be queued behind
bytes a watcher is reading slowly, so it gets another timeout; the verdict
comes once nothing moves. Behind a proxy the acknowledgements are the proxy's:
a dead peer is then found once the proxy stops taking bytes for it.

Timed on the reactor's clock (``clock``), one timer per connection; the
WebSocket protocol (``websocket.py``) feeds it what it hears.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Bytes a ping costs on the wire, its frame and a TLS record around it: what
#: the peer acknowledges of the ping alone stays within this.
PING_ON_THE_WIRE = 64


class Pings:
    """The pings of one WebSocket connection."""

    __slots__ = (
        "_acknowledged",
        "_call",
        "_clock",
        "_heard",
        "_read_acknowledged",
        "_send",
        "_sent",
        "_sent_at",
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
        acknowledged: Callable[[], int | None],
        vanished: Callable[[], None],
    ) -> None:
        self._clock = clock
        self.interval = interval
        self.timeout = timeout
        self._send = send
        self._read_acknowledged = acknowledged
        self._vanished = vanished
        self._call: IDelayedCall | None = None
        self._heard = False
        self._sent = 0  # pings sent: the next one's payload
        self._sent_at = 0.0
        #: The payload of the ping that waits for its pong.
        self._waiting: bytes | None = None
        #: What the peer had acknowledged when that ping went (or at the last look since).
        self._acknowledged: int | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._later(self.interval)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def heard(self) -> None:
        """The peer sent something: it is there, and the connection is not idle."""
        self._heard = True

    def pong(self, payload: bytes) -> None:
        if self._waiting is None or payload != self._waiting:
            return  # unsolicited, or the answer to a ping we no longer wait for
        self._waiting = None
        self._heard = False
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
        if self._heard:  # it spoke during the interval: no ping needed
            self._heard = False
            self._later(self.interval)
            return
        self._sent += 1
        self._waiting = self._sent.to_bytes(8, "big")
        self._sent_at = self._clock.seconds()
        self._acknowledged = self._read_acknowledged()
        self._send(self._waiting)
        self._later(self.timeout)

    def _pong_overdue(self) -> None:
        if self._heard:  # no pong, but the peer spoke: it is there
            self._waiting = None
            self._heard = False
            self._later(self.interval)
            return
        now = self._read_acknowledged()
        before = self._acknowledged
        if now is not None and before is not None and now - before > PING_ON_THE_WIRE:
            self._acknowledged = now  # it is reading what was queued before the ping
            self._later(self.timeout)
            return
        self._vanished()

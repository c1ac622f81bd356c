"""Dead peers: TCP keepalive on every accepted connection, and what the kernel says.

FAF's players are on home connections. A machine that loses power, Wi-Fi that
drops, a NAT box that forgets the connection: none of them sends a FIN or a
RST, and a connection nobody writes to would stay open forever. The kernel
finds such a peer if asked: after ``idle`` seconds of silence it probes,
every ``interval`` seconds, and after ``count`` probes unanswered it closes the
connection; ``TCP_USER_TIMEOUT`` bounds the same way how long data we sent
may stay unacknowledged (a dead watcher). The options are set once, on the
listening sockets (``services.KeepaliveOnListeners``): Linux hands them to
every connection accepted there (TCP, WebSocket, HTTP, PROXY-wrapped alike),
so no connection pays for them.

When such a connection ends, Twisted says only "connection lost": the
kernel's errno is not passed on. :func:`loss_of` tells the cases apart from
what the protocol knows: how long the peer had been silent, or what a
transport that knows more (a WebSocket's close, its pings) said.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from dataclasses import dataclass
from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure

from faf_replay.settings import Settings

#: Where ``tcpi_bytes_acked`` sits in Linux's ``struct tcp_info`` (a u64).
_BYTES_ACKED = 120


@dataclass(frozen=True)
class Keepalive:
    idle: float
    interval: float
    count: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Keepalive:
        return cls(settings.keepalive_idle, settings.keepalive_interval, settings.keepalive_count)

    @property
    def enabled(self) -> bool:
        return self.idle > 0

    @property
    def detection(self) -> float:
        """Seconds from a peer's last sign of life to the kernel's verdict."""
        return self.idle + self.interval * self.count

    def apply(self, sock: socket.socket) -> None:
        """Set the options on ``sock`` (a listening socket passes them on)."""
        if not self.enabled or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, round(self.idle)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, round(self.interval)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, self.count)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, round(self.detection * 1000))


class KnownLoss(ConnectionLost):
    """A connection's end whose cause the transport itself knows (a WebSocket's
    close code, a ping left unanswered), where TCP would only say "lost"."""

    def __init__(self, verdict: str, detail: str) -> None:
        super().__init__(detail)
        self.verdict = verdict
        self.detail = detail


@dataclass(frozen=True)
class Loss:
    """Why a connection ended, when not cleanly."""

    #: The label of ``replayserver_lost_connections_total``: ``no answer``,
    #: ``reset``, or a transport's own (``no pong``, ``protocol error``, ``error code``).
    verdict: str
    #: The end of the connection's log line.
    description: str


def loss_of(reason: Failure | None, silent_for: float, settings: Settings) -> Loss | None:
    """None for a clean end. Else what the transport knew (:class:`KnownLoss`),
    or, where it says only "lost": ``no answer`` when the peer had been silent
    long enough for the kernel's keepalive (or user timeout) to give up on it,
    ``reset`` otherwise."""
    if reason is None or reason.check(ConnectionDone):
        return None
    if isinstance(reason.value, KnownLoss):
        return Loss(reason.value.verdict, f" (connection lost: {reason.value.detail})")
    keepalive = Keepalive.from_settings(settings)
    if keepalive.enabled and silent_for >= keepalive.detection - keepalive.interval:
        return Loss("no answer", f" (connection lost: no answer for {silent_for:.0f} s, the peer vanished)")
    return Loss("reset", f" (connection lost: reset after {silent_for:.0f} s of silence)")


def acknowledged(transport: Any) -> int | None:
    """Bytes the peer has acknowledged on this connection (``TCP_INFO``), or None
    where that cannot be known (not a TCP socket, not Linux)."""
    try:
        sock = transport.getHandle()
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _BYTES_ACKED + 8)
    except (AttributeError, OSError):
        return None
    if len(info) < _BYTES_ACKED + 8:
        return None
    return int(struct.unpack_from("=Q", info, _BYTES_ACKED)[0])


def unacknowledged(transport: Any) -> int | None:
    """Bytes the kernel holds for this connection that the peer has not
    acknowledged yet, sent or not (``SIOCOUTQ``), or None where that cannot
    be known."""
    try:
        fileno = transport.getHandle().fileno()
        answer = fcntl.ioctl(fileno, termios.TIOCOUTQ, struct.pack("i", 0))
    except (AttributeError, OSError, ValueError):
        return None
    return int(struct.unpack("i", answer)[0])

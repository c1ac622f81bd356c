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
kernel's errno is not passed on. :func:`verdict` tells the cases apart from
what the protocol knows: how long the peer had been silent.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from twisted.internet.error import ConnectionDone
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


def verdict(reason: Failure | None, silent_for: float, settings: Settings) -> str | None:
    """Why a connection ended, when not cleanly: ``"no answer"`` when the peer
    had been silent long enough for the kernel's keepalive (or user timeout)
    to give up on it, ``"reset"`` otherwise; None for a clean end."""
    if reason is None or reason.check(ConnectionDone):
        return None
    keepalive = Keepalive.from_settings(settings)
    if keepalive.enabled and silent_for >= keepalive.detection - keepalive.interval:
        return "no answer"
    return "reset"


def describe_loss(lost: str | None, silent_for: float) -> str:
    """The end of a log line about a connection that ended: nothing for a
    clean end, else why (``verdict``) and how long the peer had been silent."""
    if lost is None:
        return ""
    if lost == "no answer":
        return f" (connection lost: no answer for {silent_for:.0f} s, the peer vanished)"
    return f" (connection lost: reset after {silent_for:.0f} s of silence)"


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

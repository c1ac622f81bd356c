"""TCP keepalive on every listening socket, inherited by every accepted connection
(the options: ``keepalive.py``).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, Service
from twisted.logger import Logger

from faf_replay.accept.keepalive import Keepalive
from faf_replay.server.listening import listening

log = Logger()


class KeepaliveOnListeners(Service):
    """Sets the keepalive options on every listener's socket once it listens."""

    def __init__(self, listeners: dict[str, IService], keepalive: Keepalive) -> None:
        self._listeners = listeners
        self._keepalive = keepalive

    def startService(self) -> None:
        super().startService()
        if not self._keepalive.enabled:
            log.info("TCP keepalive is off: a peer that vanishes is found only when it is written to")
            return
        for name, listener in self._listeners.items():
            listening(listener).addCallback(self._apply, name)

    def _apply(self, port: Any, name: str) -> None:
        sock = getattr(port, "socket", None)
        if sock is None:
            return  # not a TCP port (a unix socket): nothing to probe
        self._keepalive.apply(sock)
        log.info(
            "{name} port {port}: a silent peer is probed after {idle:g} s and closed after {after:g} s",
            name=name,
            port=port.getHost().port,
            idle=self._keepalive.idle,
            after=self._keepalive.detection,
        )

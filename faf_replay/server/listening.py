"""Whether a listener is open, and its port: the one place that asks Twisted.

``strports.service`` builds a ``StreamServerEndpointService``, which keeps the
Deferred of its ``endpoint.listen()`` as ``_waitingForPort`` and offers no
public way to it. We need it twice: to learn the port a ``tcp:0`` listener got
(tests, benchmarks, the keepalive set-up) and to report on ``/health`` whether
each listener is open. This module is the only one that reads the attribute;
``tests/unit/server/test_listening.py`` fails if a Twisted upgrade renames or removes it.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred

#: What StreamServerEndpointService calls its listen() Deferred (Twisted 16.2 to 26.10).
PORT_DEFERRED = "_waitingForPort"


def _port_deferred(listener: IService) -> Deferred | None:
    waiting = getattr(listener, PORT_DEFERRED, None)
    return waiting if isinstance(waiting, Deferred) else None


def listening(listener: IService) -> Deferred:
    """Fires with a started listener's ``IListeningPort`` once it is open.

    A branch of the endpoint service's own Deferred, which must keep its
    result: ``stopService`` needs the port to stop listening.
    """
    waiting = _port_deferred(listener)
    if waiting is None:
        raise RuntimeError(f"{listener!r} is not a started StreamServerEndpointService")
    branch: Deferred = Deferred()

    def passthrough(result: Any) -> Any:
        branch.callback(result)
        return result

    waiting.addCallback(passthrough)
    return branch


def is_listening(listener: IService) -> bool:
    """Whether ``listener`` runs and its port is open now."""
    waiting = _port_deferred(listener)
    return bool(listener.running and waiting is not None and waiting.called and waiting.result is not None)

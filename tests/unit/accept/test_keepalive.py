"""Dead peers, in pieces: keepalive options, the verdict on a lost connection, the
silence rule, and watchers that stop reading (byte by byte, on a fake clock).

The same behaviours over real sockets, with packets really lost or
blackholed, are in ``test_network.py``.
"""

from __future__ import annotations

import socket

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from faf_replay.accept.keepalive import Keepalive, KnownLoss, acknowledged, loss_of
from faf_replay.settings import Settings
from tests.support.clients import start_server, until
from tests.support.logs import CapturedLogs


class Options(SynchronousTestCase):
    def test_the_defaults_find_a_dead_peer_within_two_minutes(self):
        keepalive = Keepalive.from_settings(Settings())
        self.assertEqual((keepalive.idle, keepalive.interval, keepalive.count), (60, 10, 6))
        self.assertEqual(keepalive.detection, 120)

    def test_a_listening_socket_hands_them_to_what_it_accepts(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        Keepalive(idle=7, interval=3, count=4).apply(listener)
        client = socket.create_connection(listener.getsockname())
        self.addCleanup(client.close)
        accepted, _ = listener.accept()
        self.addCleanup(accepted.close)
        tcp = socket.IPPROTO_TCP
        self.assertEqual(
            [
                accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                accepted.getsockopt(tcp, socket.TCP_KEEPIDLE),
                accepted.getsockopt(tcp, socket.TCP_KEEPINTVL),
                accepted.getsockopt(tcp, socket.TCP_KEEPCNT),
                accepted.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
            ],
            [1, 7, 3, 4, 19_000],
        )

    def test_zero_idle_turns_keepalive_off(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        Keepalive(idle=0, interval=10, count=6).apply(listener)
        self.assertEqual(listener.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 0)

    def test_acknowledged_bytes_from_the_kernel(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        self.addCleanup(client.close)
        accepted, _ = listener.accept()
        self.addCleanup(accepted.close)

        class Transport:
            def getHandle(self):
                return accepted

        self.assertEqual(acknowledged(Transport()), 0)
        accepted.sendall(b"x" * 5000)
        client.recv(10_000)  # read: the kernel acknowledges
        for _ in range(100):
            if acknowledged(Transport()) == 5000:
                break
        self.assertEqual(acknowledged(Transport()), 5000)
        self.assertIsNone(acknowledged(StringTransport()))  # no socket: unknown


class EveryListener(TestCase):
    """TCP, WebSocket, HTTP and PROXY-wrapped ports all get the options."""

    timeout = 30

    @inlineCallbacks
    def test_every_listening_socket_has_them(self):
        logs = CapturedLogs(self)
        service, _ = yield start_server(
            self,
            port="haproxy:tcp:0:interface=127.0.0.1",
            **{
                "ws-port": "tcp:0:interface=127.0.0.1",
                "http-port": "tcp:0:interface=127.0.0.1",
                "keepalive-idle": "30",
                "keepalive-interval": "5",
                "keepalive-count": "4",
            },
        )
        for name in ("game", "websocket", "http"):
            port = yield service.listening(name)
            sock = port.socket
            self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1, name)
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 30, name)
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT), 50_000, name)
        yield until(
            lambda: len(logs.matching("a silent peer is probed after 30 s and closed after 50 s")) == 3
        )


class Verdicts(SynchronousTestCase):
    def test_verdicts(self):
        settings = Settings()  # found after 120 s of silence
        lost = Failure(ConnectionLost())
        self.assertIsNone(loss_of(None, 500, settings))
        self.assertIsNone(loss_of(Failure(ConnectionDone()), 500, settings))
        vanished = loss_of(lost, 121, settings)
        self.assertEqual(vanished.verdict, "no answer")
        self.assertIn("no answer for 121 s, the peer vanished", vanished.description)
        self.assertEqual(loss_of(lost, 3, settings).verdict, "reset")
        self.assertEqual(loss_of(lost, 500, settings.replace(keepalive_idle=0)).verdict, "reset")

    def test_a_transport_that_knows_why(self):
        """A WebSocket's own verdict wins over the guess from silence."""
        known = Failure(KnownLoss("no pong", "no answer to a WebSocket ping for 30 s"))
        for silent_for in (3, 500):
            lost = loss_of(known, silent_for, Settings())
            self.assertEqual(lost.verdict, "no pong")
            self.assertEqual(lost.description, " (connection lost: no answer to a WebSocket ping for 30 s)")

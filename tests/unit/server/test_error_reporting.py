"""Tests of ``error_reporting``."""

from __future__ import annotations

import sentry_sdk
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger, globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from faf_replay.server import error_reporting
from tests.support.clients import until
from tests.unit.server.test_tap import Sink


class Sentry(TestCase):
    timeout = 60

    def setUp(self):
        self.sink = Sink()
        self.site = WrappingFactory(Site(self.sink))  # keeps its open connections in .protocols
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self.close_sink)

    @inlineCallbacks
    def close_sink(self):
        yield self.port.stopListening()
        for protocol in list(self.site.protocols):
            protocol.transport.abortConnection()
        yield until(lambda: not self.site.protocols)

    def test_a_logged_failure_reaches_sentry(self):
        dsn = f"http://publickey@127.0.0.1:{self.port.getHost().port}/42"
        observer = error_reporting.start(dsn)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.addCleanup(sentry_sdk.init)  # back to no client
        Logger().failure("something unexpected", Failure(ValueError("a bug in a callback")))
        Logger().info("an ordinary line is not sent")
        self.flushLoggedErrors(ValueError)
        d = until(lambda: any(b"a bug in a callback" in body for body in self.sink.received), timeout=10)
        d.addCallback(lambda _: self.assertEqual(len(self.sink.received), 1))
        return d

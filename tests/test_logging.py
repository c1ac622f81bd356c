"""Logs as JSON lines, and unexpected errors sent to Sentry."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys

import sentry_sdk
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger, globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from faf_replay.server import error_reporting
from faf_replay.server.tap import log_observer
from tests.clients import Uploader, connect, until
from tests.processes import run_twistd
from tests.recordings import recording


class JsonLogs(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_one_json_object_per_line(self):
        cwd = self.mktemp()
        os.makedirs(cwd)
        twistd = run_twistd(self, cwd, "--log-format=json", "--port=tcp:0:interface=127.0.0.1", "--grace=0.2")
        yield until(lambda: b"starting on" in twistd.output or twistd.exited.called)
        events = [json.loads(line) for line in twistd.output.splitlines() if line.strip()]
        [listening] = [e for e in events if "starting on" in " ".join(e.get("message", []))]
        port = int(listening["message"][0].rsplit(" ", 1)[1])
        yield connect(port, Uploader(5, "a.SCFAreplay", recording("8805603"), [4000]))
        yield until(lambda: b"saved" in twistd.output)
        twistd.process.signalProcess("TERM")
        self.assertEqual((yield twistd.exited), 0)
        events = [json.loads(line) for line in twistd.output.splitlines() if line.strip()]
        [saved] = [e for e in events if e.get("log_namespace") == "faf_replay.save.saver"]
        self.assertEqual(saved["game_id"], 5)
        self.assertEqual(saved["log_level"]["name"], "info")


class Levels(SynchronousTestCase):
    def test_a_level_filters_text_and_json_lines(self):
        self.assertIsNone(log_observer("text", "info"))  # twistd's own lines, as they are
        for log_format in ("text", "json"):
            output = io.StringIO()
            self.patch(sys, "stdout", output)
            log = Logger(namespace="faf_replay.test", observer=log_observer(log_format, "warn"))
            log.info("an ordinary line")
            log.warn("a warning")
            log.error("an error")
            self.assertNotIn("an ordinary line", output.getvalue())
            self.assertIn("a warning", output.getvalue())
            self.assertIn("an error", output.getvalue())


class Sink(Resource):
    """Stands in for Sentry's ingestion endpoint: keeps what it is sent."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.received: list[bytes] = []

    def render_POST(self, request):
        body = request.content.read()
        if request.getHeader(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        elif request.getHeader(b"content-encoding") == b"br":
            body = b"(brotli)"
        self.received.append(body)
        request.setHeader(b"connection", b"close")
        return b"{}"


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

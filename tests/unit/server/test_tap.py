"""The server as makeService builds it: its logs, as JSON lines and at the levels asked for."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource

from faf_replay.server.tap import log_observer
from tests.support.clients import Uploader, connect, until
from tests.support.processes import run_twistd
from tests.support.recordings import recording


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

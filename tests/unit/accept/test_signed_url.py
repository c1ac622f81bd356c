"""Tests of ``signed_url``."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from faf_replay.accept.signed_url import sign
from tests.support.clients import (
    Uploader,
    connect_websocket,
    start_server,
)
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import recording
from tests.system.test_end_to_end import read_saved
from tests.unit.accept.test_websocket import WS


class SignedUrls(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        secret = self.mktemp()
        with open(secret, "wb") as file:
            file.write(b"edge-proxy-secret\n")
        self.service, _ = yield start_server(
            self, **{**WS, "ws-hmac-secret-file": secret, "ws-hmac-lifetime": "600"}
        )
        self.port = (yield self.service.listening("websocket")).getHost().port
        self.logs = CapturedLogs(self)

    def url(self, path, timestamp):
        token = sign(b"edge-proxy-secret", path, timestamp)
        return f"{path}?verify={token.replace('+', '%2B').replace('/', '%2F').replace('=', '%3D')}"

    @inlineCallbacks
    def test_a_valid_token_passes(self):
        now = int(reactor.seconds())
        uploader = Uploader(50, "a.SCFAreplay", recording("example"), [3000])
        yield connect_websocket(self.port, uploader, path=self.url("/50/a.scfareplay", now))
        yield self.service.registry.when_done(50)
        self.assertEqual(read_saved(self.service.registry.settings.vault, 50)[1], recording("example"))

    @inlineCallbacks
    def test_bad_and_expired_tokens_get_403(self):
        now = int(reactor.seconds())
        before = metric("replayserver_rejected_connections_total", reason="bad signed url")
        for path in [
            "/51/a.scfareplay",  # no token
            self.url("/51/a.scfareplay", now).replace("51", "52", 1),  # signed for another path
            self.url("/51/a.scfareplay", now - 601),  # expired
            "/51/a.scfareplay?verify=123-bm90IGEgbWFj",  # not the MAC
        ]:
            with self.assertRaises(ConnectionError) as caught:
                yield connect_websocket(self.port, Uploader(51, "a", b"", [1]), path=path)
            self.assertIn("403", str(caught.exception))
        self.assertEqual(
            metric("replayserver_rejected_connections_total", reason="bad signed url"), before + 4
        )
        self.assertNotIn(51, self.service.registry.games)
        self.assertEqual(len(self.logs.matching("websocket from")), 4)

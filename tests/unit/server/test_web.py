"""The HTTP side: metrics, health, the live-games API and its page."""

from __future__ import annotations

import json
import shutil

from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from faf_replay.server.web import wants_metrics
from tests.support.clients import Uploader, Watcher, connect, start_server, until
from tests.support.metrics import metric
from tests.support.recordings import recording

HTTP = {"http-port": "tcp:0:interface=127.0.0.1"}


#: What Prometheus 2 sends when it scrapes, and what VictoriaMetrics' vmagent and
#: other text-format scrapers send; what Chromium sends for a page; curl's.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
TEXT_SCRAPER_ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
    "application/signed-exchange;v=b3;q=0.7"
)


@inlineCallbacks
def get(port: int, path: str, accept: str | None = None):
    headers = Headers({b"accept": [accept.encode()]} if accept is not None else {})
    response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode(), headers)
    body = yield readBody(response)
    return response.code, response.headers.getRawHeaders(b"content-type", [b""])[0], body


class WebTestCase(TestCase):
    timeout = 60

    @inlineCallbacks
    def start(self, **options):
        service, game_port = yield start_server(self, **{**HTTP, **options})
        http_port = (yield service.listening("http")).getHost().port
        return service, game_port, http_port


class Metrics(WebTestCase):
    @inlineCallbacks
    def test_the_anchors_names_and_ours(self):
        service, game, http = yield self.start()
        uploader = Uploader(60, "a.SCFAreplay", recording("example"), [5000])
        yield connect(game, uploader)
        yield service.registry.when_done(60)
        code, kind, body = yield get(http, "/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b"text/plain", kind)
        text = body.decode()
        for name in [
            'replayserver_active_connections_count{category="writer"}',
            'replayserver_served_connections_total{result="Success"}',
            "replayserver_running_replays_count",
            "replayserver_finished_replays_total",
            "replayserver_saved_replay_files_total",
            "replayserver_received_bytes_total",
            "replayserver_sent_bytes_total",
            "replayserver_rejected_connections_total",
            "replayserver_diverged_uploads_total",
            "replayserver_stalled_uploads_total",
            "replayserver_save_duration_seconds_bucket",
            "replayserver_database_errors_total",
            "replayserver_outbox_entries",
            "replayserver_watchers_per_replay_bucket",
        ]:
            self.assertIn(name, text)

    def test_the_python_heap_falls_when_memory_is_freed(self):
        """Unlike the resident memory: a leak is this rising at a steady load (the soak's slope)."""
        before = metric("replayserver_python_allocated_blocks")
        held = [[n] for n in range(200_000)]  # 200,000 small lists (and their ints)
        peak = metric("replayserver_python_allocated_blocks")
        self.assertGreater(peak - before, 200_000)
        del held
        self.assertGreater(peak - metric("replayserver_python_allocated_blocks"), 190_000)


class ScrapedAtTheRoot(WebTestCase):
    """FAF scrapes ``/`` (``prometheus.io/path: '/'``); a browser there gets the page."""

    @inlineCallbacks
    def test_prometheus_and_text_scrapers_get_metrics_a_browser_the_page(self):
        service, game, http = yield self.start()
        yield connect(game, Uploader(61, "a.SCFAreplay", recording("example"), [5000]))
        yield service.registry.when_done(61)

        code, kind, body = yield get(http, "/", PROMETHEUS_ACCEPT)
        self.assertEqual(code, 200)
        self.assertTrue(kind.startswith(b"application/openmetrics-text"), kind)
        families = {f.name: f for f in openmetrics_parser.text_string_to_metric_families(body.decode())}
        self.assertGreaterEqual(families["replayserver_saved_replay_files"].samples[0].value, 1)
        self.assertIn("replayserver_running_replays_count", families)

        for accept in (TEXT_SCRAPER_ACCEPT, None):
            code, kind, body = yield get(http, "/", accept)
            self.assertEqual(code, 200)
            self.assertTrue(kind.startswith(b"text/plain"), kind)
            families = {f.name: f for f in text_string_to_metric_families(body.decode())}
            self.assertGreaterEqual(families["replayserver_saved_replay_files"].samples[0].value, 1)

        for accept in (BROWSER_ACCEPT, "*/*"):
            code, kind, body = yield get(http, "/", accept)
            self.assertEqual((code, kind), (200, b"text/html; charset=utf-8"))
            self.assertIn(b"<h1>Live games</h1>", body)
        code, kind, _ = yield get(http, "/metrics", BROWSER_ACCEPT)  # /metrics stays metrics
        self.assertTrue(kind.startswith(b"text/plain"), kind)

    def test_who_is_a_scraper(self):
        for accept, scraper in [
            (None, True),
            (b"", True),
            (PROMETHEUS_ACCEPT.encode(), True),
            (TEXT_SCRAPER_ACCEPT.encode(), True),
            (b"text/plain", True),
            (b"Application/OpenMetrics-Text; version=1.0.0", True),
            (b"text/plain;q=0.5, text/html", True),  # named first
            (BROWSER_ACCEPT.encode(), False),
            (b"text/html;q=0.1, text/plain", False),
            (b"*/*", False),
            (b"application/json", False),
        ]:
            self.assertEqual(wants_metrics(accept), scraper, accept)


class Health(WebTestCase):
    @inlineCallbacks
    def test_healthy(self):
        _, _, http = yield self.start()
        code, _, body = yield get(http, "/health")
        self.assertEqual(code, 200)
        self.assertEqual(
            json.loads(body),
            {
                "status": "ok",
                "listening": {"game": True, "http": True},
                "vault_writable": True,
                "database": "off",
                "running_replays": 0,
            },
        )

    @inlineCallbacks
    def test_unwritable_vault(self):
        service, _, http = yield self.start(spool=self.mktemp())  # not in the vault this time
        vault = service.registry.settings.vault
        shutil.rmtree(vault)  # made at startup, when it was writable
        with open(vault, "w") as file:
            file.write("a file where the vault should be")
        code, _, body = yield get(http, "/health")
        self.assertEqual(code, 503)
        self.assertEqual(json.loads(body)["vault_writable"], False)
        self.assertEqual(metric("replayserver_vault_writable"), 0)

    @inlineCallbacks
    def test_database_down(self):
        service, _, http = yield self.start(
            db="mysql://nobody@127.0.0.1:1/faf", **{"db-check-interval": "0.2"}
        )
        yield until(lambda: service.database.reachable is False)
        code, _, body = yield get(http, "/health")
        self.assertEqual((code, json.loads(body)["database"]), (200, "down"))


class LiveGames(WebTestCase):
    @inlineCallbacks
    def test_games_api(self):
        service, game, http = yield self.start(delay="300", grace="30")
        stream = recording("example")
        uploaders = [Uploader(70, f"{who}.SCFAreplay", stream, [4000]) for who in "ab"]
        for uploader in uploaders:
            uploader.keep_open = True
            yield connect(game, uploader)
            yield uploader.sent_all
        yield until(lambda: 70 in service.registry.games)
        yield connect(game, Watcher(70))
        yield until(lambda: service.registry.games[70].watcher_count == 1)
        code, kind, body = yield get(http, "/games")
        self.assertEqual((code, kind), (200, b"application/json"))
        [status] = json.loads(body)
        self.assertEqual(status["game_id"], 70)
        self.assertEqual((status["uploaders"], status["watchers"], status["ending"]), (2, 1, False))
        self.assertEqual(status["state"], "accepting")
        self.assertGreater(status["watchable_in"], 250)  # the body arrived moments ago; delay 300
        self.assertLessEqual(status["watchable_in"], 300)
        self.print_example(body)
        code, _, one = yield get(http, "/games/70")
        self.assertEqual((code, json.loads(one)["game_id"]), (200, 70))
        code, _, _ = yield get(http, "/games/71")
        self.assertEqual(code, 404)
        code, _, _ = yield get(http, "/games/abc")
        self.assertEqual(code, 404)
        for uploader in uploaders:
            uploader.transport.loseConnection()
        yield until(lambda: service.registry.games[70].status(reactor.seconds())["ending"])
        [status] = json.loads((yield get(http, "/games"))[2])
        self.assertEqual((status["ending"], status["watchable_in"]), (True, 0))

    def print_example(self, body: bytes) -> None:
        print(f"\n    GET /games -> {body.decode()}")

    @inlineCallbacks
    def test_page(self):
        service, game, http = yield self.start(delay="300")
        uploader = Uploader(72, "a.SCFAreplay", recording("example"), [4000])
        uploader.keep_open = True
        yield connect(game, uploader)
        yield until(lambda: 72 in service.registry.games)
        code, kind, body = yield get(http, "/", BROWSER_ACCEPT)
        self.assertEqual((code, kind), (200, b"text/html; charset=utf-8"))
        self.assertIn(b'<tr data-game="72">', body)
        self.assertIn(b"1 running", body)

"""The live-games page in a real browser: headless Chromium (Debian's ``chromium``)
loads it while games run, and the test reads the table it rendered."""

from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.support.clients import Uploader, Watcher, connect, start_server, until
from tests.support.recordings import recording
from tests.support.requirements import unavailable

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    unavailable("BROWSER", "chromium is not installed", "apt-get install chromium, or run .ci/run")


class Table(HTMLParser):
    """The cells of ``<table id="games">``, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_table = self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "table" and ("id", "games") in attrs:
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self._in_cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.rows[-1][-1] += data.strip()


class Page(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_the_browser_shows_the_running_games(self):
        browser = chromium()
        service, game_port = yield start_server(
            self, **{"http-port": "tcp:0:interface=127.0.0.1", "delay": "300", "grace": "30"}
        )
        http = (yield service.listening("http")).getHost().port
        for game_id, uploaders in [(80, 2), (81, 1)]:
            for who in range(uploaders):
                uploader = Uploader(game_id, f"{who}.SCFAreplay", recording("example"), [4000])
                uploader.keep_open = True
                yield connect(game_port, uploader)
        yield until(lambda: {80, 81} <= set(service.registry.games))
        yield connect(game_port, Watcher(80))
        yield until(lambda: service.registry.games[80].watcher_count == 1)
        profile = self.mktemp()
        url = f"http://127.0.0.1:{http}/"
        out, err, code = yield getProcessOutputAndValue(
            browser, [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url], env=os.environ
        )
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        table = Table()
        table.feed(out.decode())
        header, *rows = table.rows
        self.assertEqual(
            header,
            [
                "Game",
                "Map",
                "Players",
                "Game time",
                "Uploaders",
                "Watchers",
                "Running for",
                "Watchable",
                "Stream",
                "State",
            ],
        )
        by_game = {row[0]: row for row in rows}
        self.assertEqual(set(by_game), {"80", "81"})
        self.assertEqual(
            by_game["80"][1:3], ["scmp_016", "MazorNoob (team 2, Cybran), dragonite (team 3, Cybran)"]
        )
        self.assertEqual(by_game["80"][3], "0 s")  # what watchers may see: nothing yet, delay 300 s
        self.assertEqual(by_game["80"][4:6], ["2", "1"])
        self.assertEqual(by_game["81"][4:6], ["1", "0"])
        self.assertTrue(by_game["80"][7].startswith("in 4 min") or by_game["80"][7].startswith("in 5 min"))
        self.assertRegex(by_game["80"][8], r"^up to [0-9.]+ KB/s over the last 5 min$")  # the plot's title
        self.assertEqual(by_game["80"][9], "live")

        screenshot = os.path.abspath(self.mktemp() + ".png")
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,420"]
        _, err, code = yield getProcessOutputAndValue(
            browser, [*flags, f"--screenshot={screenshot}", url], env=os.environ
        )
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        with open(screenshot, "rb") as file:
            self.assertEqual(file.read(8), b"\x89PNG\r\n\x1a\n")
        print(f"\n    screenshot of the live-games page: {screenshot}")

"""Players and watchers that vanish, over a network of the test's own.

A machine that loses power or a Wi-Fi that drops sends no FIN and no RST: its
packets just stop. Each test runs in a network namespace of its own (see
``tests/support/netns.py``) where nftables blackholes one client's connection; the
server must find out (TCP keepalive, a user timeout), close it with a logged
verdict, and save the game whole, while everyone else is served as before.
"""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from faf_replay.settings import Settings
from tests.support.clients import Uploader, Watcher, connect, start_server, until
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.netns import namespace_for
from tests.support.recordings import recording, split
from tests.system.test_end_to_end import read_saved

#: Keepalive that gives up after 2 + 1 x 3 = 5 s of silence.
QUICK = {"keepalive-idle": "2", "keepalive-interval": "1", "keepalive-count": "3", "grace": "1"}


def lost(category: str) -> float:
    return metric("replayserver_lost_connections_total", category=category, verdict="no answer")


class VanishingTestCase(TestCase):
    timeout = 120

    def setUp(self):
        self.logs = CapturedLogs(self)
        self.namespace = namespace_for(self)
        self.clients: list = []
        self.addCleanup(self.close_clients)

    def close_clients(self):
        for client in self.clients:
            if client.transport is not None and not client.done.called:
                client.transport.abortConnection()
        return gatherResults([client.done for client in self.clients])

    @inlineCallbacks
    def start(self, **options):
        with self.namespace.entered():
            started = start_server(self, **options)
        service, self.port = yield started
        return service

    @inlineCallbacks
    def join(self, client):
        self.clients.append(client)
        with self.namespace.entered():
            connected = connect(self.port, client)
        yield connected
        return client

    def vanish(self, client) -> float:
        """Its packets stop, both ways, from now on: no FIN, no RST."""
        self.namespace.blackhole(client.transport.getHost().port)
        return time.monotonic()

    def ended(self, who: str) -> list[str]:
        """The server's line on the end of this upload or watcher (not the one on its joining)."""
        return [line for line in self.logs.matching(who) if " ended after " in line or " left after " in line]

    def line(self, who: str) -> str:
        [line] = self.ended(who)
        return line


class VanishedUploader(VanishingTestCase):
    @inlineCallbacks
    def vanishing_game(self, game_id: int):
        """One player sends the whole game and leaves; the other vanishes halfway."""
        stream = recording("example")
        finishing = Uploader(game_id, "finishing.SCFAreplay", stream, [700], pause=0.01)
        vanishing = Uploader(game_id, "vanishing.SCFAreplay", stream[: len(stream) // 2], [700], pause=0.01)
        vanishing.keep_open = True
        watcher = Watcher(game_id)
        yield self.join(finishing)
        yield self.join(vanishing)
        yield vanishing.sent_all
        vanished_at = self.vanish(vanishing)
        yield self.join(watcher)
        yield finishing.done
        before = lost("writer")
        yield until(lambda: self.ended("upload 'vanishing.SCFAreplay'"), timeout=300)
        found_after = time.monotonic() - vanished_at
        yield self.service.registry.when_done(game_id)
        saved_after = time.monotonic() - vanished_at
        _, saved = read_saved(self.service.registry.settings.vault, game_id)
        self.assertEqual(saved, stream)  # whole: everything the finishing player sent
        self.assertEqual((yield watcher.done), stream)  # and the watcher got its end
        self.assertIn("(connection lost: no answer for", self.line("upload 'vanishing.SCFAreplay'"))
        self.assertEqual(lost("writer"), before + 1)
        return found_after, saved_after

    @inlineCallbacks
    def test_the_game_is_saved_whole_once_keepalive_gives_up(self):
        self.service = yield self.start(**QUICK)
        found, saved = yield self.vanishing_game(31)
        self.assertLess(found, 5 + 2)  # keepalive's 5 s, counted from the last packet
        self.assertLess(saved, 5 + 1 + 2)  # then the grace period
        print(
            f"\n    vanished uploader (keepalive 2/1/3, grace 1): closed after {found:.1f} s, "
            f"saved after {saved:.1f} s"
        )

    @inlineCallbacks
    def test_with_the_defaults(self):
        """Keepalive 60 s + 6 x 10 s, grace 30 s: a vanished player costs the replay 2.5 minutes."""
        defaults = Settings()
        self.service = yield self.start(grace=str(defaults.grace))
        found, saved = yield self.vanishing_game(32)
        self.assertLess(found, 120 + 5)
        self.assertLess(saved, 120 + defaults.grace + 5)
        print(f"\n    vanished uploader (defaults): closed after {found:.1f} s, saved after {saved:.1f} s")

    test_with_the_defaults.timeout = 300  # type: ignore[attr-defined]


class VanishedAndFrozenWatchers(VanishingTestCase):
    """One watcher vanishes, one stops reading; the others get every byte."""

    @inlineCallbacks
    def big_game(self, game_id: int):
        header, body = split(recording("example"))
        stream = header + body * 500  # 20 MB: more than a socket's buffers hold
        uploader = Uploader(game_id, "p.SCFAreplay", stream, [256 * 1024], pause=0.001)
        uploader.keep_open = True
        yield self.join(uploader)
        yield until(lambda: game_id in self.service.registry.games)
        return uploader, stream

    @inlineCallbacks
    def test_a_vanished_watcher_is_closed_by_the_kernels_verdict(self):
        self.service = yield self.start(**QUICK, **{"watcher-stall-timeout": "600"})
        uploader, stream = yield self.big_game(41)
        vanishing, reading = Watcher(41, "vanishing"), Watcher(41, "reading")
        yield self.join(vanishing)
        yield self.join(reading)
        yield vanishing.first_data
        vanished_at = self.vanish(vanishing)
        before = lost("reader")
        yield until(lambda: self.ended("watcher 'vanishing'"), timeout=60)
        found_after = time.monotonic() - vanished_at
        self.assertIn("(connection lost: no answer for", self.line("watcher 'vanishing'"))
        self.assertEqual(lost("reader"), before + 1)
        self.assertLess(found_after, 5 + 2)  # the user timeout: 5 s without an acknowledgement
        uploader.transport.loseConnection()
        self.assertEqual((yield reading.done), stream)
        print(f"\n    vanished watcher (user timeout 5 s): closed after {found_after:.1f} s")

    @inlineCallbacks
    def test_a_frozen_watcher_is_closed_and_a_slow_one_is_not(self):
        self.service = yield self.start(**{"watcher-stall-timeout": "3"})
        uploader, stream = yield self.big_game(42)
        frozen, slow, reading = Watcher(42, "frozen"), Watcher(42, "slow"), Watcher(42, "reading")
        for watcher in (frozen, slow, reading):
            yield self.join(watcher)
        frozen.transport.pauseProducing()  # its machine answers, its game reads nothing
        slow.transport.pauseProducing()
        before = metric("replayserver_stalled_watchers_total")
        for _ in range(8):  # reads a little every 2 s: slow, but alive
            yield self.wait(2)
            slow.transport.resumeProducing()
            yield self.wait(0.05)
            slow.transport.pauseProducing()
        [line] = self.logs.matching("acknowledged nothing for 3 s while its socket stayed full")
        self.assertIn("watcher 'frozen'", line)
        self.assertEqual(metric("replayserver_stalled_watchers_total"), before + 1)
        self.assertEqual(self.ended("watcher 'slow'"), [])
        slow.transport.resumeProducing()
        uploader.transport.loseConnection()
        self.assertEqual((yield reading.done), stream)
        self.assertEqual((yield slow.done), stream)

    def wait(self, seconds: float):
        return deferLater(reactor, seconds, lambda: None)

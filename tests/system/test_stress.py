"""Thousands of hostile connections beside a few honest games, over real TCP.

Idle connections that never send their header, connections dribbling a header
one byte at a time, uploads that never complete a replay header, garbage
streams and a flood from single addresses: the honest games are saved intact
and on time, and the server holds the hostile connections within its limits.
"""

from __future__ import annotations

import os
import resource

import fafreplay
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import TestCase

from faf_replay.save.vault import vault_path
from tests.support.clients import Uploader, Watcher, connect, start_server, until
from tests.support.logs import CapturedLogs
from tests.support.recordings import recording

IDLE_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 10)]  # 8 addresses, 300 idle each, 256 allowed each
IDLE_EACH = 300
PER_ADDRESS = 256


class Hostile(Protocol):
    """Sends ``opening`` then, every ``interval``, one more byte of ``drip`` (if any)."""

    def __init__(self, opening: bytes = b"", drip: bytes = b"", interval: float = 0.2):
        self.opening, self.drip, self.interval = opening, drip, interval
        self.connected_once: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self._loop: LoopingCall | None = None

    def connectionMade(self):
        if self.opening:
            self.transport.write(self.opening)
        if self.drip:
            self._loop = LoopingCall(self._drip)
            self._loop.start(self.interval, now=False)
        self.connected_once.callback(True)

    def _drip(self):
        if self.drip:
            self.transport.write(self.drip[:1])
            self.drip = self.drip[1:]

    def connectionLost(self, reason):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if not self.connected_once.called:
            self.connected_once.callback(False)
        self.closed.callback(None)


class HostileFactory(ClientFactory):
    def __init__(self, protocol: Hostile):
        self.protocol_instance = protocol

    def buildProtocol(self, addr):
        return self.protocol_instance

    def clientConnectionFailed(self, connector, reason):
        if not self.protocol_instance.connected_once.called:
            self.protocol_instance.connected_once.callback(False)
        self.protocol_instance.closed.callback(None)


class Stress(TestCase):
    timeout = 240

    def setUp(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 12000 <= hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        self.hostile: list[Hostile] = []
        self.addCleanup(self.close_hostile)
        self.logs = CapturedLogs(self)

    def close_hostile(self):
        closing = []
        for protocol in self.hostile:
            if protocol.transport is not None and not protocol.closed.called:
                protocol.transport.abortConnection()
                closing.append(protocol.closed)
        return DeferredList(closing)

    @inlineCallbacks
    def open_hostile(self, port, source, count, **kwargs):
        batch = []
        for _ in range(count):
            protocol = Hostile(**kwargs)
            self.hostile.append(protocol)
            reactor.connectTCP("127.0.0.1", port, HostileFactory(protocol), bindAddress=(source, 0))
            batch.append(protocol.connected_once)
            if len(batch) == 100:
                yield DeferredList(batch)
                batch = []
        yield DeferredList(batch)

    @inlineCallbacks
    def test_honest_games_survive(self):
        service, port = yield start_server(
            self,
            port="tcp:0:interface=127.0.0.1:backlog=1024",
            delay="0.3",
            grace="0.5",
            # As on the public internet: loopback addresses are no proxies here.
            **{"max-connections-per-address": str(PER_ADDRESS), "trusted-proxies": "none"},
        )
        for source in IDLE_ADDRESSES:
            yield self.open_hostile(port, source, IDLE_EACH)
        yield self.open_hostile(port, "127.0.0.10", 200, opening=b"P/", drip=b"123456789" * 30)
        yield self.open_hostile(port, "127.0.0.11", 100, opening=b"P/77/x\0Supreme", drip=b" Commander" * 30)
        yield self.open_hostile(port, "127.0.0.12", 50, opening=b"P/88/garbage\0" + os.urandom(4000))
        yield self.open_hostile(port, "127.0.0.13", 50, opening=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

        held = service.listener.factory.limits.open
        self.assertGreaterEqual(held, len(IDLE_ADDRESSES) * PER_ADDRESS)

        honest = {2001: "example", 2002: "22373098", 2003: "diverging_1/5"}
        uploaders, watchers = [], []
        for game_id, name in honest.items():
            for who in "ab":
                uploader = Uploader(game_id, f"{who}.SCFAreplay", recording(name), [1500], pause=0.005)
                uploaders.append(uploader)
                yield connect(port, uploader)
        yield until(lambda: all(g in service.registry.games for g in honest))
        for game_id in honest:
            watcher = Watcher(game_id)
            watchers.append(watcher)
            yield connect(port, watcher)
        yield DeferredList([u.done for u in uploaders])
        yield DeferredList([service.registry.when_done(g) for g in honest])

        vault = service.registry.settings.vault
        for game_id, name in honest.items():
            with vault_path(vault, game_id).open("rb") as file:
                self.assertEqual(fafreplay.extract_scfa(file), recording(name))
        for watcher, name in zip(watchers, honest.values(), strict=True):
            self.assertEqual((yield watcher.done), recording(name))
        # Each ended by its grace once its uploads were gone: nothing hostile held it
        # open. (How long saving takes under load is benchmarks.load's to measure.)
        for game_id in honest:
            [ended] = self.logs.matching(f"game {game_id}: write phase over")
            self.assertIn("(no uploader for 0.5 s)", ended)

        refused = sum(1 for p in self.hostile if p.closed.called)
        self.assertGreater(refused, IDLE_EACH - PER_ADDRESS)  # the floods beyond the limits
        still_open = sum(1 for p in self.hostile if not p.closed.called)
        self.assertGreaterEqual(still_open, len(IDLE_ADDRESSES) * PER_ADDRESS)
        print(
            f"\n    stress: {len(self.hostile)} hostile connections tried, {held} held at once, "
            f"{still_open} still held, {refused} closed; the honest games saved whole"
        )

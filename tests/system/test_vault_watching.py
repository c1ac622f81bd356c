"""Watching a game that has ended: the whole replay, from the vault, over TCP and WebSocket."""

import json
import os
import time

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from faf_replay.replay.lifecycle import State
from faf_replay.save.vault import vault_path
from tests.support.clients import Uploader, Watcher, until
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import recording, split
from tests.system.test_end_to_end import OverTCP, read_saved
from tests.unit.accept.test_websocket import OverWebSocket
from tests.unit.server.test_web import HTTP, get


class VaultWatching(OverTCP, TestCase):
    timeout = 60

    def setUp(self):
        self.logs = CapturedLogs(self)

    @inlineCallbacks
    def play(self, port, service, game_id: int, stream: bytes, uploaders: int = 2):
        """A whole game: its uploaders send ``stream`` and leave; fires once it is saved and done."""
        players = [Uploader(game_id, f"p{i}.SCFAreplay", stream, [8192]) for i in range(uploaders)]
        for player in players:
            yield self.connect(port, player)
        yield service.registry.when_done(game_id)

    @inlineCallbacks
    def watch(self, port, game_id: int, name: str = "late"):
        watcher = Watcher(game_id, name)
        yield self.connect(port, watcher)
        received = yield watcher.done
        return received

    def served(self, source: str) -> float:
        return metric("replayserver_watchers_total", source=source)

    @inlineCallbacks
    def test_a_watcher_after_the_end_gets_the_whole_replay(self):
        service, port = yield self.start()
        stream = recording("example")
        yield self.play(port, service, 3001, stream)
        before = self.served("vault")
        received = yield self.watch(port, 3001)
        self.assertEqual(received, stream)
        self.assertEqual(read_saved(service.registry.settings.vault, 3001)[1], stream)
        self.assertEqual(self.served("vault"), before + 1)
        [line] = self.logs.matching("watches the ended game from the vault")
        self.assertIn("game 3001: watcher 'late' from 127.0.0.1:", line)
        [left] = [line for line in self.logs.matching("game 3001: watcher 'late'") if "left after" in line]
        self.assertIn(f"left after {len(stream)} bytes (whole replay sent)", left)

    @inlineCallbacks
    def test_the_live_games_api_says_an_ended_game_can_be_watched(self):
        service, port = yield self.start(**HTTP)
        http = (yield service.listening("http")).getHost().port
        yield self.play(port, service, 3006, recording("example"))
        [ended] = [game for game in json.loads((yield get(http, "/games"))[2]) if game["game_id"] == 3006]
        self.assertEqual((ended["state"], ended["watchable_from_vault"]), ("ended", True))
        code, _, body = yield get(http, "/games/3006")
        self.assertEqual((code, json.loads(body)["watchable_from_vault"]), (200, True))
        code, _, page = yield get(http, "/", "text/html")
        self.assertIn(b'<tr data-ended="3006"><td>3006</td>', page)
        self.assertIn(b"from the vault", page)

    @inlineCallbacks
    def test_a_watcher_during_the_drain_gets_the_whole_replay(self):
        """A live watcher that stopped reading keeps the game draining; one who
        comes now is served from the vault, and the live one still gets its end."""
        service, port = yield self.start()
        header, body = split(recording("example"))
        stream = header + body * 200  # ~8 MB: more than the slow watcher's socket buffers hold
        players = [Uploader(3002, f"p{i}.SCFAreplay", stream, [1 << 20], pause=0.001) for i in range(2)]
        for player in players:
            yield self.connect(port, player)
        yield until(lambda: 3002 in service.registry.games)
        slow = Watcher(3002, "slow")
        yield self.connect(port, slow)
        slow.transport.pauseProducing()
        game = service.registry.games[3002]
        yield until(lambda: game.state is State.DRAINING, timeout=30)
        before = self.served("vault")
        received = yield self.watch(port, 3002, "drain")
        self.assertEqual(received, stream)
        self.assertIs(game.state, State.DRAINING)  # the slow one still holds it
        self.assertEqual(self.served("vault"), before + 1)
        slow.transport.resumeProducing()
        self.assertEqual((yield slow.done), stream)

    @inlineCallbacks
    def test_a_watcher_after_a_restart_gets_the_whole_replay_once_the_delay_has_passed(self):
        """The new run did not see the game end (a deploy may have cut it while its players
        played on): its replay waits out the delay from its save, then is served whole."""
        vault = self.mktemp()
        service, port = yield self.start(vault=vault)
        stream = recording("8805603")
        yield self.play(port, service, 3003, stream)
        yield service.stopService()
        service, port = yield self.start(vault=vault, delay="60")
        self.assertNotIn(3003, service.registry.games)
        self.assertEqual((yield self.watch(port, 3003)), b"")
        [line] = self.logs.matching("game 3003: not served from the vault yet")
        self.assertIn("watchable", line)
        self.assertEqual(len(self.logs.matching("cannot watch game 3003: no live replay")), 1)
        aged = time.time() - 61
        os.utime(vault_path(vault, 3003), (aged, aged))
        self.assertEqual((yield self.watch(port, 3003)), stream)

    @inlineCallbacks
    def test_a_game_a_deploy_cut_is_not_shown_past_the_delay(self):
        """SIGTERM in the middle of a game saves what its players sent; they play on (FA does
        not reconnect): a watcher after the restart gets nothing the delay would not show."""
        vault = self.mktemp()
        service, port = yield self.start(vault=vault, delay="60")
        header, body = split(recording("8805603"))
        player = Uploader(3007, "p0.SCFAreplay", header + body[:20_000], [4096])
        player.keep_open = True
        yield self.connect(port, player)
        yield player.sent_all
        yield until(lambda: 3007 in service.registry.games)
        live = Watcher(3007, "live")
        yield self.connect(port, live)
        yield service.stopService()
        self.assertEqual(read_saved(vault, 3007)[1], header + body[:20_000])
        self.assertIn((yield live.done), (b"", header))  # the delay had shown no body byte
        service, port = yield self.start(vault=vault, delay="60")
        self.assertEqual((yield self.watch(port, 3007)), b"")
        player.transport.loseConnection()  # the first run's end of it may still be closing
        yield player.done

    @inlineCallbacks
    def test_a_game_never_seen_is_refused_as_today(self):
        _, port = yield self.start()
        before = self.served("vault")
        self.assertEqual((yield self.watch(port, 3004)), b"")
        self.assertEqual(len(self.logs.matching("cannot watch game 3004: no live replay")), 1)
        self.assertEqual(self.served("vault"), before)

    @inlineCallbacks
    def test_off_refuses_as_today(self):
        service, port = yield self.start(**{"vault-watch-age": "0"})
        stream = recording("example")
        yield self.play(port, service, 3005, stream)
        self.assertEqual((yield self.watch(port, 3005)), b"")
        self.assertEqual(len(self.logs.matching("cannot watch game 3005: no live replay")), 1)


class VaultWatchingOverWebSocket(OverWebSocket, VaultWatching):
    pass

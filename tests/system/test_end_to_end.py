"""The whole server over real TCP: uploaders, watchers, the saved file."""

import io
import json
import os

import fafreplay
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase

from faf_replay.save import attempts as save_attempts
from faf_replay.save.vault import vault_path
from tests.support.clients import Uploader, Watcher, connect, start_server, until
from tests.support.logs import CapturedLogs
from tests.support.recordings import recording, split


def read_saved(vault: str, game_id: int) -> tuple[dict, bytes]:
    data = vault_path(vault, game_id).read_bytes()
    metadata = json.loads(data.split(b"\n", 1)[0])
    return metadata, fafreplay.extract_scfa(io.BytesIO(data))


class OverTCP:
    """How a suite reaches the server: plain TCP. Subclassed for WebSocket."""

    def start(self, **options):
        return start_server(self, **options)

    def connect(self, port, protocol):
        return connect(port, protocol)


class EndToEnd(OverTCP, TestCase):
    timeout = 60

    @inlineCallbacks
    def test_uploaders_and_watchers(self):
        logs = CapturedLogs(self)
        service, port = yield self.start()
        stream = recording("example")
        uploaders = [
            Uploader(2000, f"player{i}.SCFAreplay", stream, sizes)
            for i, sizes in enumerate([[1000, 333, 4096, 17], [1, 2000, 7], [8192], [500, 501]])
        ]
        for uploader in uploaders:
            yield self.connect(port, uploader)
        yield until(lambda: 2000 in service.registry.games)
        early = [Watcher(2000, f"early{i}") for i in range(3)]
        for watcher in early:
            yield self.connect(port, watcher)
        yield DeferredList([u.sent_all for u in uploaders])
        late = Watcher(2000, "late")
        yield self.connect(port, late)
        done = service.registry.when_done(2000)
        received = yield DeferredList([w.done for w in [*early, late]])
        yield done
        for ok, data in received:
            self.assertTrue(ok)
            self.assertEqual(data, stream)

        metadata, scfa = read_saved(service.registry.settings.vault, 2000)
        self.assertEqual(scfa, stream)
        self.assertEqual(fafreplay.body_ticks(split(scfa)[1]), 1928)
        self.assertEqual(metadata["uid"], 2000)
        self.assertEqual(metadata["mapname"], "scmp_016")
        self.assertEqual(metadata["teams"], {"2": ["MazorNoob"], "3": ["dragonite"]})
        self.assertEqual((metadata["version"], metadata["compression"]), (2, "zstd"))
        self.assertIn(metadata["recorder"], {f"player{i}" for i in range(4)})
        self.assertEqual(len(logs.matching("game 2000: saved")), 1)
        self.assertEqual(len(logs.matching("whole replay sent")), 4)

    @inlineCallbacks
    def test_diverging_uploads(self):
        service, port = yield self.start()
        uploaders = []
        for i in range(6):
            uploader = Uploader(3001, f"{i}.SCFAreplay", recording(f"diverging_1/{i}"), [700 + 37 * i])
            uploaders.append(uploader)
            yield self.connect(port, uploader)
        yield until(lambda: 3001 in service.registry.games)
        watcher = Watcher(3001)
        yield self.connect(port, watcher)
        done = service.registry.when_done(3001)
        watched = yield watcher.done
        yield done
        _, scfa = read_saved(service.registry.settings.vault, 3001)
        header, body = split(scfa)
        self.assertEqual(body, split(recording("diverging_1/5"))[1])
        self.assertIn(header, {split(recording(f"diverging_1/{i}"))[0] for i in range(6)})
        self.assertEqual(watched, scfa)
        self.assertEqual(fafreplay.body_ticks(body), 722)

    @inlineCallbacks
    def test_single_uploader(self):
        service, port = yield self.start()
        uploader = Uploader(7, "solo.SCFAreplay", recording("8805603"), [64])
        yield self.connect(port, uploader)
        yield uploader.done
        yield service.registry.when_done(7)
        _, scfa = read_saved(service.registry.settings.vault, 7)
        self.assertEqual(scfa, recording("8805603"))

    @inlineCallbacks
    def test_more_uploads_than_open_spool_files(self):
        """With two open files allowed, six spooled uploads take turns and lose nothing."""
        service, port = yield self.start(**{"spool-open-files": "2", "spool-sync": "0.05"})
        games = {41: "example", 42: "22373098", 43: "8805603"}
        uploaders = [
            Uploader(game_id, f"p{n}.SCFAreplay", recording(name), [700] * 200, pause=0.005)
            for game_id, name in games.items()
            for n in range(2)
        ]
        for uploader in uploaders:
            yield self.connect(port, uploader)
        for uploader in uploaders:
            yield uploader.done
        for game_id, name in games.items():
            yield service.registry.when_done(game_id)
            _, scfa = read_saved(service.registry.settings.vault, game_id)
            self.assertEqual(scfa, recording(name))
        descriptors = service.registry._spool.descriptors
        self.assertEqual(descriptors.limit, 2)
        self.assertGreater(descriptors.evictions, 0)

    @inlineCallbacks
    def test_garbage_beside_a_game(self):
        """Bad connections are closed; the honest game is saved intact."""
        logs = CapturedLogs(self)
        service, port = yield self.start()
        honest = Uploader(11, "honest.SCFAreplay", recording("example"), [4000])
        yield self.connect(port, honest)
        garbage = [
            Uploader(11, "liar.SCFAreplay", b"\x00" * 5000, [100]),  # empty version string
            Uploader(11, "noise.SCFAreplay", bytes(range(256)) * 20, [300]),
        ]
        for g in garbage:
            yield self.connect(port, g)
        bad_header = Watcher(11, "x")
        bad_header.header = b"Q/11/x\0"
        yield self.connect(port, bad_header)
        self.assertEqual((yield bad_header.done), b"")
        unknown = Watcher(999)
        yield self.connect(port, unknown)
        self.assertEqual((yield unknown.done), b"")
        yield service.registry.when_done(11)
        _, scfa = read_saved(service.registry.settings.vault, 11)
        self.assertEqual(scfa, recording("example"))
        self.assertEqual(len(logs.matching("invalid replay header")), 2)
        self.assertEqual(len(logs.matching("unknown connection type")), 1)

    @inlineCallbacks
    def test_late_uploader_does_not_touch_the_saved_file(self):
        logs = CapturedLogs(self)
        service, port = yield self.start()
        first = Uploader(12, "a.SCFAreplay", recording("example"), [10000])
        yield self.connect(port, first)
        yield service.registry.when_done(12)
        path = vault_path(service.registry.settings.vault, 12)
        before = path.read_bytes()
        late = Uploader(12, "b.SCFAreplay", recording("8805603"), [10000])
        yield self.connect(port, late)
        yield late.done
        # The server refused it (and closed it: what late.done waited for).
        [refused] = logs.matching("'b.SCFAreplay' from")
        self.assertIn("upload for game 12 refused", refused)
        self.assertEqual(path.read_bytes(), before)
        self.assertNotIn(12, service.registry.games)

    @inlineCallbacks
    def test_stop_saves_running_games(self):
        service, port = yield self.start(delay="300", grace="30")
        uploader = Uploader(13, "a.SCFAreplay", recording("example"), [5000])
        uploader.keep_open = True
        yield self.connect(port, uploader)
        yield uploader.sent_all
        yield until(lambda: 13 in service.registry.games)
        watcher = Watcher(13)
        yield self.connect(port, watcher)
        yield watcher.first_data
        yield service.stopService()
        yield uploader.done
        # the game may still be running: the watcher keeps its 300 s delay
        self.assertEqual((yield watcher.done), split(recording("example"))[0])
        _, scfa = read_saved(service.registry.settings.vault, 13)
        self.assertEqual(scfa, recording("example"))


class Backpressure(OverTCP, TestCase):
    """A watcher that stops reading costs a bounded buffer and slows nobody."""

    timeout = 120

    @inlineCallbacks
    def test_slow_watcher(self):
        service, port = yield self.start(delay="0.1", grace="1")
        header, body = split(recording("example"))
        stream = header + body * 500  # ~20 MB: more than the kernel's socket buffers hold
        uploader = Uploader(21, "p.SCFAreplay", stream, [256 * 1024], pause=0.001)
        yield self.connect(port, uploader)
        yield until(lambda: 21 in service.registry.games)
        slow, fast = Watcher(21, "slow"), Watcher(21, "fast")
        yield self.connect(port, slow)
        slow.transport.pauseProducing()  # stop reading from the socket
        yield self.connect(port, fast)
        received = yield fast.done
        self.assertEqual(received, stream)

        game = service.registry.games[21]
        [download] = [w for w in game._watchers if w.name == "slow"]
        transport = socket_of(download.transport)
        buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        self.assertLessEqual(buffered, transport.bufferSize + 64 * 1024)
        self.assertLess(download.sent, len(stream) // 2)  # most of it is still only in the game

        slow.transport.resumeProducing()
        self.assertEqual((yield slow.done), stream)


def socket_of(transport):
    """The TCP transport under a watcher's transport (itself, or the WebSocket's)."""
    websocket = getattr(transport, "_websocket", None)
    return transport if websocket is None else websocket.transport


class RefusingVault(TestCase):
    """The vault refuses a file: the replay waits in the spool and is saved once it can be."""

    timeout = 60

    @inlineCallbacks
    def test_saved_once_the_vault_takes_it(self):
        self.patch(save_attempts, "SAVE_RETRY_FIRST", 0.2)
        logs = CapturedLogs(self)
        service, port = yield start_server(self)
        vault = service.registry.settings.vault
        os.makedirs(vault, exist_ok=True)  # the spool is in it already
        blocker = os.path.join(vault, "0")
        with open(blocker, "w") as file:
            file.write("a file where the vault needs a folder")
        uploader = Uploader(31, "a.SCFAreplay", recording("example"), [8000])
        other = Uploader(32, "b.SCFAreplay", recording("8805603"), [8000])
        yield connect(port, uploader)
        yield connect(port, other)
        yield until(lambda: len(logs.matching("cannot write the replay file")) >= 2)
        spool = os.path.join(service.registry.settings.spool_directory, "games")
        self.assertEqual(sorted(os.listdir(spool)), ["31", "32"])
        os.unlink(blocker)  # the operator mends the vault
        yield service.registry.when_done(31)
        yield service.registry.when_done(32)
        self.assertEqual(read_saved(vault, 31)[1], recording("example"))
        self.assertEqual(read_saved(vault, 32)[1], recording("8805603"))
        yield until(lambda: os.listdir(spool) == [])  # the spool writer removes it after the save
        self.assertGreaterEqual(len(logs.matching("the replay stays in the spool; next try in")), 2)

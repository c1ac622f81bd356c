import errno
import io
import json
import os
import stat
import threading

import fafreplay
import zstandard
from twisted.internet.defer import inlineCallbacks
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase, TestCase

from faf_replay.database.outbox import Entry, Outbox, complete_metadata
from faf_replay.save import vault as vault_module
from faf_replay.save.vault import ReplayExistsError, encode_replay, refuses_links, vault_path, write_replay
from faf_replay.spool.spool import Spool
from tests.support.clients import Uploader, connect, start_server, until
from tests.support.filesystems import linkless_directory
from tests.support.logs import CapturedLogs
from tests.support.metrics import metric
from tests.support.recordings import chunks, recording
from tests.unit.server.test_web import get


class VaultPath(SynchronousTestCase):
    def test_spec_examples(self):
        for game_id, folders in [
            (1123456789, "11/23/45/67"),
            (12345, "0/0/1/23"),
            (1234567, "0/1/23/45"),
            (5500550055, "55/0/55/0"),
            (0, "0/0/0/0"),
        ]:
            self.assertEqual(
                vault_path("/vault", game_id).as_posix(), f"/vault/{folders}/{game_id}.fafreplay"
            )

    def test_long_ids_keep_the_last_ten_digits(self):
        self.assertEqual(vault_path("v", 991123456789).as_posix(), "v/11/23/45/67/991123456789.fafreplay")

    def test_negative(self):
        self.assertRaises(ValueError, vault_path, "v", -1)


class Encoding(SynchronousTestCase):
    def test_v2_layout(self):
        scfa = recording("example")
        data = encode_replay({"uid": 1, "version": 2, "compression": "zstd", "title": "Żółw"}, scfa, 10)
        line, frame = data.split(b"\n", 1)
        self.assertEqual(json.loads(line)["title"], "Żółw")
        params = zstandard.get_frame_parameters(frame)
        self.assertEqual(params.content_size, len(scfa))
        # One frame, nothing after it: one-shot decompression takes it whole.
        self.assertEqual(zstandard.decompress(frame), scfa)
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        self.assertEqual(decompressor.decompress(frame), scfa)
        self.assertEqual(decompressor.unused_data, b"")
        self.assertEqual(fafreplay.extract_scfa(io.BytesIO(data)), scfa)

    def test_a_reused_compressor_gives_each_replay_its_own_whole_frame(self):
        """One compressor per thread and level serves every save: each frame
        stands alone, whatever came before it (sizes, levels, threads)."""
        replays = [recording("example"), recording("8805603")[:5000], recording("example")[:10]]
        for level in (10, 3, 10):
            for scfa in replays:
                frame = encode_replay({"uid": 1}, scfa, level).split(b"\n", 1)[1]
                self.assertEqual(zstandard.get_frame_parameters(frame).content_size, len(scfa))
                self.assertEqual(zstandard.ZstdDecompressor().decompress(frame), scfa)
        results = {}

        def in_thread():
            results["frame"] = encode_replay({"uid": 2}, replays[1], 10).split(b"\n", 1)[1]

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
        self.assertEqual(zstandard.decompress(results["frame"]), replays[1])


class Writing(SynchronousTestCase):
    def setUp(self):
        self.vault = self.mktemp()

    def test_write_and_read_back(self):
        scfa = recording("22373098")
        saved = write_replay(self.vault, 22373098, {"uid": 22373098, "version": 2}, scfa, 3)
        self.assertEqual(saved.path, vault_path(self.vault, 22373098))
        self.assertEqual(saved.size, saved.path.stat().st_size)
        with saved.path.open("rb") as file:
            self.assertEqual(fafreplay.extract_scfa(file), scfa)
        self.assertEqual(os.listdir(saved.path.parent), ["22373098.fafreplay"])

    def test_readable_by_a_content_server_of_another_user(self):
        """FAF's nginx serves the vault as its own user: replays are 0644, as the
        Rust server's were, also once the outbox completed their JSON line."""
        saved = write_replay(self.vault, 11, {"uid": 11, "version": 2}, recording("8805603"), 3)
        self.assertEqual(stat.S_IMODE(saved.path.stat().st_mode), 0o644)
        entry = Entry(11, str(saved.path), saved.size, 154, False, 1.0, 2.0)
        complete_metadata(entry, {"uid": 11, "version": 2, "title": "completed"})
        self.assertEqual(stat.S_IMODE(saved.path.stat().st_mode), 0o644)
        self.assertIn(b'"title":"completed"', saved.path.read_bytes())
        outbox = Outbox(self.mktemp())
        outbox.add(entry)  # the server's own bookkeeping stays private
        self.assertEqual(stat.S_IMODE((outbox.directory / "11.json").stat().st_mode), 0o600)

    def test_never_overwrites(self):
        first = write_replay(self.vault, 5, {"uid": 5, "version": 2}, b"first", 3)
        before = first.path.read_bytes()
        with self.assertRaises(ReplayExistsError):
            write_replay(self.vault, 5, {"uid": 5, "version": 2}, b"second", 3)
        self.assertEqual(first.path.read_bytes(), before)
        self.assertEqual(os.listdir(first.path.parent), ["5.fafreplay"])

    def test_unwritable_vault_leaves_nothing(self):
        os.makedirs(self.vault)
        blocker = os.path.join(self.vault, "0")
        with open(blocker, "w") as file:
            file.write("a file where a folder should be")
        with self.assertRaises(OSError):
            write_replay(self.vault, 5, {"uid": 5}, b"data", 3)
        self.assertEqual(os.listdir(self.vault), ["0"])


def replay_metadata(game_id: int) -> dict:
    return {"uid": game_id, "version": 2, "compression": "zstd"}


class Spy:
    """Calls the real function and counts the calls (not a mock: the filesystem answers)."""

    def __init__(self, function):
        self.function = function
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


class WritingOnAnOrdinaryFilesystem(SynchronousTestCase):
    """Where link() works it is what puts a replay into place."""

    def setUp(self):
        self.vault = self.mktemp()

    def test_links(self):
        link = Spy(os.link)
        self.patch(os, "link", link)
        saved = write_replay(self.vault, 8, replay_metadata(8), recording("example"), 3)
        self.assertEqual(link.calls, 1)
        self.assertFalse(saved.links_refused)
        self.assertFalse(refuses_links(self.vault))

    def test_completes_an_interrupted_claim(self):
        """An empty file (a save by claim that crashed, perhaps while the vault was
        on another filesystem) is no replay: the next save replaces it."""
        final = vault_path(self.vault, 9)
        final.parent.mkdir(parents=True)
        final.touch()
        saved = write_replay(self.vault, 9, replay_metadata(9), recording("example"), 3)
        with saved.path.open("rb") as file:
            self.assertEqual(fafreplay.extract_scfa(file), recording("example"))
        self.assertFalse(saved.links_refused)
        self.assertEqual(os.listdir(final.parent), ["9.fafreplay"])

    def test_a_replay_that_appears_during_the_save_is_kept(self):
        """The link itself refuses an existing replay (not only the check before
        compressing): another save's file that lands between the two stays."""
        final = vault_path(self.vault, 6)
        final.parent.mkdir(parents=True)
        original = vault_module._holds_replay
        checks = []

        def holds_replay(path):
            held = original(path)
            checks.append(path)
            if len(checks) == 1:  # the early check passes; then another save lands
                final.write_bytes(b"the other save\n")
            return held

        link = Spy(os.link)
        self.patch(os, "link", link)
        self.patch(vault_module, "_holds_replay", holds_replay)
        with self.assertRaises(ReplayExistsError):
            write_replay(self.vault, 6, replay_metadata(6), recording("example"), 3)
        self.assertEqual((link.calls, len(checks)), (1, 2))  # it got as far as the link
        self.assertFalse(refuses_links(self.vault))
        self.assertEqual(final.read_bytes(), b"the other save\n")
        self.assertEqual(os.listdir(final.parent), ["6.fafreplay"])


class WritingWithoutHardLinks(SynchronousTestCase):
    """The vault on a real filesystem that refuses link(): exFAT, over FUSE."""

    def setUp(self):
        self.vault = str(linkless_directory(self))

    def test_the_filesystem_refuses_links(self):
        """What this suite stands on; exFAT over FUSE says EPERM."""
        with open(os.path.join(self.vault, "a"), "wb"):
            pass
        with self.assertRaises(OSError) as refused:
            os.link(os.path.join(self.vault, "a"), os.path.join(self.vault, "b"))
        self.assertEqual(refused.exception.errno, errno.EPERM)

    def test_saves_real_recordings(self):
        for game_id, name in [(22373098, "22373098"), (8805603, "8805603"), (2000, "example")]:
            scfa = recording(name)
            saved = write_replay(self.vault, game_id, replay_metadata(game_id), scfa, 3)
            self.assertTrue(saved.links_refused)
            self.assertEqual(saved.path, vault_path(self.vault, game_id))
            self.assertEqual(saved.size, saved.path.stat().st_size)
            with saved.path.open("rb") as file:
                self.assertEqual(fafreplay.extract_scfa(file), scfa)
            self.assertEqual(os.listdir(saved.path.parent), [f"{game_id}.fafreplay"])
        self.assertTrue(refuses_links(self.vault))

    def test_never_overwrites(self):
        first = write_replay(self.vault, 5, replay_metadata(5), recording("example"), 3)
        before = first.path.read_bytes()
        with self.assertRaises(ReplayExistsError):
            write_replay(self.vault, 5, replay_metadata(5), recording("8805603"), 3)
        # A new process: link() is tried again, refused, and the claim finds the replay.
        self.patch(vault_module, "_refuses_links", set())
        with self.assertRaises(ReplayExistsError):
            write_replay(self.vault, 5, replay_metadata(5), recording("8805603"), 3)
        self.assertEqual(first.path.read_bytes(), before)
        self.assertEqual(os.listdir(first.path.parent), ["5.fafreplay"])

    def test_a_replay_that_appears_during_the_save_is_kept(self):
        """The claim itself refuses an existing replay (not only the check before
        compressing): another save's file that lands between the two stays."""
        final = vault_path(self.vault, 6)
        original = vault_module._holds_replay
        calls = []

        def holds_replay(path):
            held = original(path)
            calls.append(path)
            if len(calls) == 1:  # the early check passes; then another save lands
                with open(final, "wb") as file:
                    file.write(b"the other save\n")
            return held

        write_replay(self.vault, 60, replay_metadata(60), b"another game", 3)
        self.assertTrue(refuses_links(self.vault))  # so this save goes straight to the claim
        self.patch(vault_module, "_holds_replay", holds_replay)
        with self.assertRaises(ReplayExistsError):
            write_replay(self.vault, 6, replay_metadata(6), recording("example"), 3)
        self.assertEqual(len(calls), 2)  # the early check, then the claim's
        self.assertEqual(final.read_bytes(), b"the other save\n")
        self.assertEqual(sorted(os.listdir(final.parent)), ["6.fafreplay", "60.fafreplay"])

    def test_completes_an_interrupted_claim(self):
        final = vault_path(self.vault, 7)
        final.parent.mkdir(parents=True)
        final.touch()  # what a crash between the claim and the rename leaves
        saved = write_replay(self.vault, 7, replay_metadata(7), recording("example"), 3)
        with saved.path.open("rb") as file:
            self.assertEqual(fafreplay.extract_scfa(file), recording("example"))
        self.assertEqual(os.listdir(final.parent), ["7.fafreplay"])

    def test_link_is_tried_once_per_vault(self):
        link = Spy(os.link)
        self.patch(os, "link", link)
        write_replay(self.vault, 100, replay_metadata(100), b"first", 3)
        self.assertEqual(link.calls, 1)  # refused: this save went by claim
        write_replay(self.vault, 200, replay_metadata(200), b"second", 3)
        self.assertEqual(link.calls, 1)
        # Another vault still tries link(), and links where it can.
        ordinary = self.mktemp()
        self.assertFalse(write_replay(ordinary, 100, replay_metadata(100), b"first", 3).links_refused)
        self.assertEqual(link.calls, 2)

    def test_unwritable_vault_leaves_nothing(self):
        blocker = os.path.join(self.vault, "0")
        with open(blocker, "w") as file:
            file.write("a file where a folder should be")
        with self.assertRaises(OSError):
            write_replay(self.vault, 5, replay_metadata(5), b"data", 3)
        self.assertEqual(os.listdir(self.vault), ["0"])


class SpoolWithoutHardLinks(SynchronousTestCase):
    """The spool lies in the vault by default: on exFAT it must keep, recover and
    remove uploads as anywhere (folders created and renamed into the trash,
    appends, syncfs, chmod)."""

    def test_keeps_recovers_and_removes(self):
        directory = linkless_directory(self) / ".faf-replay-spool"
        spool = Spool(directory)
        game = spool.game(31, 1000.0)
        file = game.new_upload("player")
        written = []
        for piece in chunks(recording("example"), [4096]):
            spool.write(file, piece, written.append)
        spool.send()
        synced = []
        spool.sync(synced.append)
        self.assertEqual(synced, [None])
        self.assertEqual(sum(written), len(recording("example")))
        game.close()

        again = Spool(directory)  # a restart after a crash
        [recovered] = again.recover()
        self.assertEqual((recovered.game_id, recovered.started_at), (31, 1000.0))
        [upload] = recovered.uploads
        self.assertEqual(upload.name, "player")
        self.assertEqual(upload.file.read(0, upload.file.size), recording("example"))

        recovered.spool.remove()
        again.emptier.wait()
        self.assertEqual(os.listdir(again.games), [])
        self.assertEqual(os.listdir(again.trash), [])


class ServerWithoutHardLinks(TestCase):
    """The whole server over real TCP, its vault on exFAT, and so its spool too
    (by default ``<vault>/.faf-replay-spool``)."""

    timeout = 60

    @inlineCallbacks
    def test_saves_games_and_keeps_its_spool_there(self):
        vault = str(linkless_directory(self))
        logs = CapturedLogs(self)
        spool_errors = metric("replayserver_spool_errors_total")
        service, port = yield start_server(
            self, vault=vault, **{"http-port": "tcp:0:interface=127.0.0.1", "spool-sync": "0.05"}
        )
        http = (yield service.listening("http")).getHost().port
        games = {2000: "example", 3100: "8805603"}
        uploaders = [
            Uploader(game_id, f"p{n}.SCFAreplay", recording(name), [1000])
            for game_id, name in games.items()
            for n in range(2)
        ]
        for uploader in uploaders:
            yield connect(port, uploader)
        for game_id, name in games.items():
            yield service.registry.when_done(game_id)
            path = vault_path(vault, game_id)
            with path.open("rb") as file:
                self.assertEqual(fafreplay.extract_scfa(file), recording(name))
            self.assertEqual(os.listdir(path.parent), [path.name])  # no temporary left
        self.assertTrue(refuses_links(vault))

        # A late uploader of a saved game is refused; the file stays as it is.
        path = vault_path(vault, 2000)
        before = path.read_bytes()
        late = Uploader(2000, "late.SCFAreplay", recording("22373098"), [10000])
        yield connect(port, late)
        yield late.done
        self.assertEqual(path.read_bytes(), before)

        # The spool let go of the saved games: their folders went through its trash.
        spool = os.path.join(vault, ".faf-replay-spool")
        yield until(lambda: not os.listdir(os.path.join(spool, "games")))
        yield until(lambda: not os.listdir(os.path.join(spool, "trash")))
        code, _, body = yield get(http, "/health")
        self.assertEqual((code, json.loads(body)["vault_writable"]), (200, True))
        self.assertEqual(metric("replayserver_spool_errors_total"), spool_errors)
        self.assertEqual(logs.lines(LogLevel.error) + logs.lines(LogLevel.critical), [])
        yield service.stopService()

import io
import json
import os

import fafreplay
import zstandard
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.vault import ReplayExistsError, encode_replay, vault_path, write_replay
from tests.recordings import recording


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

"""The vault as FAF has it: a volume whose folders belong to root.

The Rust image runs as root, so FAF's vault and every folder in it belong to
root. Our image runs as root too; a server started as another user must say at
once that it cannot write there, never look healthy, and save what waited in
the spool as soon as the vault takes files. Real processes (twistd started as
root and as ``nobody``), real sockets, real recordings.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import fafreplay
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from faf_replay.save.vault import vault_path
from tests.support.clients import Uploader, connect, until
from tests.support.processes import run_twistd
from tests.support.recordings import recording
from tests.support.requirements import unavailable
from tests.unit.server.test_web import get

NOBODY = 65534
OTHER_USER = 4242


class VaultOwnedByAnotherUser(TestCase):
    timeout = 60

    def setUp(self):
        if os.geteuid() != 0:
            unavailable("ROOT", "changing owners and starting a server as another user needs root")
        # Outside trial's folders (0700: another user could not even reach them).
        self.cwd = Path(tempfile.mkdtemp(prefix="faf-replay-owners-"))
        self.addCleanup(shutil.rmtree, self.cwd, ignore_errors=True)
        os.chmod(self.cwd, 0o755)
        self.vault = self.cwd / "vault"

    def own(self, path: Path, uid: int) -> None:
        os.chown(path, uid, uid)

    @inlineCallbacks
    def test_as_root_the_image_writes_into_folders_of_any_owner(self):
        """The image's default: root writes into FAF's volume whatever owns its folders."""
        folder = vault_path(self.vault, 5).parent
        folder.mkdir(parents=True)
        for path in (self.vault, *folder.relative_to(self.vault).parents, folder.relative_to(self.vault)):
            self.own(self.vault / path, OTHER_USER)
            os.chmod(self.vault / path, 0o755)
        twistd = run_twistd(self, str(self.cwd), "--port=tcp:0:interface=127.0.0.1", f"--vault={self.vault}",
                            "--grace=0.2", "--delay=0")  # fmt: skip
        port = yield twistd.listening()
        yield connect(port, Uploader(5, "a.SCFAreplay", recording("8805603"), [4000]))
        path = vault_path(self.vault, 5)
        yield until(path.exists)
        with path.open("rb") as file:
            self.assertEqual(fafreplay.extract_scfa(file), recording("8805603"))
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o644)  # readable by the content server
        self.assertNotIn(b"is not writable", twistd.output)
        twistd.process.signalProcess("TERM")
        self.assertEqual((yield twistd.exited), 0)

    @inlineCallbacks
    def test_a_server_of_another_user_says_so_and_is_not_healthy(self):
        self.vault.mkdir()  # root's, 0755: as FAF's volume is to any user but root
        spool = self.cwd / "spool"
        spool.mkdir()
        self.own(spool, NOBODY)
        self.own(self.cwd, NOBODY)
        twistd = run_twistd(self, str(self.cwd), "--port=tcp:0:interface=127.0.0.1", f"--vault={self.vault}",
                            f"--spool={spool}", "--http-port=tcp:0:interface=127.0.0.1", "--grace=0.2",
                            "--delay=0", uid=NOBODY)  # fmt: skip
        port = yield twistd.listening()
        self.assertIn(
            f"the vault {self.vault} is not writable by uid {NOBODY} (Permission denied)".encode(),
            twistd.output,
        )
        yield until(lambda: "Site" in twistd.ports)
        code, _, body = yield get(twistd.ports["Site"], "/health")
        self.assertEqual((code, json.loads(body)["vault_writable"]), (503, False))

        yield connect(port, Uploader(6, "a.SCFAreplay", recording("example"), [4000]))
        yield until(lambda: b"cannot write the replay file" in twistd.output)
        self.assertTrue((spool / "games" / "6").is_dir())  # kept, to be saved later

        self.own(self.vault, NOBODY)  # the operator mends the volume's owner
        code, _, _ = yield get(twistd.ports["Site"], "/health")
        self.assertEqual(code, 200)
        path = vault_path(self.vault, 6)
        yield until(path.exists, timeout=20)  # the save's next try (5 s after the first)
        with path.open("rb") as file:
            self.assertEqual(fafreplay.extract_scfa(file), recording("example"))
        twistd.process.signalProcess("TERM")
        self.assertEqual((yield twistd.exited), 0)

    @inlineCallbacks
    def test_with_its_spool_in_that_vault_it_does_not_start(self):
        self.vault.mkdir()
        self.own(self.cwd, NOBODY)
        twistd = run_twistd(self, str(self.cwd), "--port=tcp:0:interface=127.0.0.1", f"--vault={self.vault}",
                            uid=NOBODY)  # fmt: skip
        self.assertNotEqual((yield twistd.exited), 0)
        self.assertIn(
            f"cannot use the spool directory {self.vault}/.faf-replay-spool as uid {NOBODY}: "
            "Permission denied".encode(),
            twistd.output,
        )

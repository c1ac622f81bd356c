"""kill -9 in the middle of games: every game comes back from the spool.

Real processes: ``twistd faf-replay`` is started, fed part of many games,
killed with SIGKILL, started again; half of the games' uploaders come back
with their whole stream, half never do. Every game must end up in the vault,
byte for byte what was sent.
"""

from __future__ import annotations

import os
from pathlib import Path

import fafreplay
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from faf_replay.save.vault import vault_path
from tests.support.clients import Uploader, connect, until
from tests.support.processes import run_twistd
from tests.support.recordings import ALL, recording

GAMES = 24
OPTIONS = [
    "--port=tcp:0:interface=127.0.0.1",
    "--vault=vault",
    "--spool=spool",
    "--delay=0.2",
    "--sample-interval=0.05",
    "--grace=1",
    "--spool-sync=0.2",
]


class KillNine(TestCase):
    timeout = 180

    def setUp(self):
        self.cwd = self.mktemp()
        os.makedirs(self.cwd)

    def spooled(self, game_id: int) -> list[int]:
        """Bytes of each upload the spool holds (after the uploader's name and its NUL)."""
        folder = Path(self.cwd, "spool", "games", str(game_id))
        if not folder.exists():
            return []
        sizes = []
        for path in folder.glob("*.upload"):
            with path.open("rb") as file:
                sizes.append(path.stat().st_size - file.read(64).index(b"\0") - 1)
        return sorted(sizes)

    def saved(self, game_id: int) -> bytes:
        with vault_path(Path(self.cwd, "vault"), game_id).open("rb") as file:
            return fafreplay.extract_scfa(file)

    @inlineCallbacks
    def test_no_game_is_lost(self):
        games = {1000 + i: recording(ALL[i % len(ALL)]) for i in range(GAMES)}
        cut = {game_id: len(stream) * 3 // 5 for game_id, stream in games.items()}

        first = run_twistd(self, self.cwd, *OPTIONS)
        port = yield first.listening()
        for game_id, stream in games.items():
            for name in ("a", "b"):
                uploader = Uploader(game_id, f"{name}.SCFAreplay", stream[: cut[game_id]], [4096])
                uploader.keep_open = True  # still playing when the server dies
                yield connect(port, uploader)
        yield until(lambda: all(self.spooled(g) == [cut[g], cut[g]] for g in games), timeout=60)
        first.process.signalProcess("KILL")
        self.assertEqual((yield first.exited), -9)

        second = run_twistd(self, self.cwd, *OPTIONS)
        port = yield second.listening()
        returning = sorted(games)[: GAMES // 2]
        for game_id in returning:  # these players' clients send their whole stream again
            for name in ("a", "b"):
                yield connect(port, Uploader(game_id, f"{name}.SCFAreplay", games[game_id], [8192]))
        vault = Path(self.cwd, "vault")
        yield until(lambda: all(vault_path(vault, g).exists() for g in games), timeout=60)

        lost = [g for g in games if self.saved(g) != (games[g] if g in returning else games[g][: cut[g]])]
        self.assertEqual(lost, [])
        self.assertIn(b"recovered from the spool (2 upload(s)", second.output)
        yield until(lambda: not any(Path(self.cwd, "spool", "games").iterdir()), timeout=30)

        second.process.signalProcess("TERM")
        self.assertEqual((yield second.exited), 0)

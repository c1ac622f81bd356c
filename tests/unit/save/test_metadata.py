import json
import subprocess
import sys

import fafreplay
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.save.best_effort import guarded
from faf_replay.save.metadata import (
    header_facts,
    header_players,
    login_from_name,
    replay_ticks,
    standalone_metadata,
)
from tests.support.paths import REPOSITORY
from tests.support.recordings import DATA, poisoned, recording, split

SPEC_KEYS = {
    "uid", "complete", "state", "featured_mod", "featured_mod_versions", "game_type", "recorder",
    "host", "launched_at", "game_end", "title", "mapname", "num_players", "teams", "version",
    "compression",
}  # fmt: skip


class Standalone(SynchronousTestCase):
    def test_every_key(self):
        header, _ = split(recording("example"))
        meta = standalone_metadata(7, header, recorder="MazorNoob", launched_at=10.7, game_end=99.2)
        self.assertEqual(set(meta), SPEC_KEYS)
        self.assertEqual(meta["uid"], 7)
        self.assertEqual((meta["version"], meta["compression"]), (2, "zstd"))
        self.assertEqual((meta["launched_at"], meta["game_end"]), (10, 99))
        self.assertIs(meta["complete"], True)
        self.assertEqual(meta["state"], "PLAYING")
        self.assertEqual(meta["featured_mod"], "faf")
        json.dumps(meta)

    def test_agrees_with_the_production_file(self):
        """22373098.fafreplay was saved by FAF's server with database metadata."""
        production = json.loads((DATA / "22373098.fafreplay").read_bytes().split(b"\n")[0])
        facts = header_facts(split(recording("22373098"))[0])
        for key in ("mapname", "teams", "num_players"):
            self.assertEqual(facts[key], production[key], key)
        # That file predates FAF's named victory conditions ("3" was sandbox).
        self.assertEqual((production["game_type"], facts["game_type"]), ("3", "SANDBOX"))

    def test_victory_condition_as_the_database_names_it(self):
        self.assertEqual(header_facts(split(recording("example"))[0])["game_type"], "DEMORALIZATION")
        self.assertEqual(header_facts(b"garbage")["game_type"], "unknown")

    def test_teams_and_players(self):
        facts = header_facts(split(recording("diverging_1/3"))[0])
        self.assertEqual(facts["num_players"], 6)
        self.assertEqual(
            {team: sorted(names) for team, names in facts["teams"].items()},
            {"2": ["Geosearchef", "ShugoTenshi", "galacticfear"], "3": ["Katharsas", "Neroxis", "ZLO"]},
        )
        self.assertEqual(facts["mapname"], "paradisebay.v0007")

    def test_header_the_parser_refuses(self):
        header = split(recording("example"))[0]
        broken = header[:200]
        facts = header_facts(broken)
        self.assertEqual(facts["mapname"], "SCMP_016")
        self.assertEqual(facts["teams"], {})
        self.assertEqual(header_facts(b"garbage")["mapname"], "None")

    def test_a_header_that_makes_the_parser_panic(self):
        """The parser panics (a PyO3 PanicException is a BaseException): neutral values, one problem."""
        header, _ = split(poisoned())
        with self.assertRaises(BaseException) as raised:
            fafreplay.Parser().parse_header(header)
        self.assertFalse(isinstance(raised.exception, Exception))  # what `except Exception` missed
        problems: list[str] = []
        facts = header_facts(header, problems)
        self.assertEqual(facts["teams"], {})
        self.assertEqual(facts["mapname"], "SCMP_016")  # still read from the raw header
        [problem] = problems
        self.assertIn("its replay header cannot be read (PanicException", problem)

    def test_guarded_lets_only_the_interpreters_exits_through(self):
        def raising(error):
            raise error

        self.assertEqual(guarded(lambda: 5), (5, None))
        self.assertEqual(guarded(raising, RecursionError("deep")), (None, "RecursionError: deep"))
        self.assertRaises(KeyboardInterrupt, guarded, raising, KeyboardInterrupt())
        self.assertRaises(SystemExit, guarded, raising, SystemExit(1))

    def test_ticks_best_effort(self):
        _, body = split(recording("example"))
        self.assertEqual(replay_ticks(body), 1928)
        problems: list[str] = []
        self.assertIsNone(replay_ticks(b"\x00\x02\x00", problems))  # a command shorter than its own head
        [problem] = problems
        self.assertIn("its ticks cannot be counted (PyReplayReadError: invalid command size)", problem)

    def test_a_command_of_no_size_is_refused_not_looped_on(self):
        """``17 00 00``: a command whose size says 0. FAF's ``body_ticks`` loops on it
        for ever holding the GIL, so the check runs in a process of its own: a
        regression fails on the timeout instead of stopping the test run. The last
        body is the one that froze the soak's server: a hostile upload of example with
        one bit flipped in a command's size (4 to 12), which makes a count of the
        commands lose its place and land on ``04 00 00`` eleven bytes on."""
        code = (
            "from faf_replay.save.metadata import replay_ticks;"
            " from tests.support.mutations import FlipBit;"
            " from tests.support.recordings import recording, split;"
            " problems = []; print(replay_ticks(%s, problems), problems)"
        )
        bodies = (
            "bytes.fromhex('170000')",
            "bytes.fromhex('010000')",
            "bytes.fromhex('00070001000000170000')",  # after one tick
            "split(FlipBit(33996, 3).apply(recording('example')))[1]",
        )
        for body in bodies:
            done = subprocess.run(
                [sys.executable, "-c", code % body],
                cwd=REPOSITORY,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            refused = "None ['its ticks cannot be counted (PyReplayReadError: invalid command size)']"
            self.assertEqual(done.stdout.strip(), refused, body)

    def test_login_from_name(self):
        self.assertEqual(login_from_name("Rowan.SCFAreplay"), "Rowan")
        self.assertEqual(login_from_name("rowan.scfareplay"), "rowan")
        self.assertEqual(login_from_name("a/b"), "a/b")
        self.assertEqual(login_from_name(""), "")


class Players(SynchronousTestCase):
    def test_in_the_headers_army_order_with_team_and_faction(self):
        """fafreplay's mapping of armies comes in another order from one parse to
        the next: 30 parses must all give the header's own order."""
        header = split(recording("example"))[0]
        for _ in range(30):
            self.assertEqual(
                header_players(header),
                [
                    {"name": "MazorNoob", "team": "2", "faction": "Cybran"},
                    {"name": "dragonite", "team": "3", "faction": "Cybran"},
                ],
            )
        self.assertEqual(header_players(b"not a header"), [])

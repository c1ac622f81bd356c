"""The chaos soak (``benchmarks/soak``): its pure parts, its blackhole in a network namespace,
and a short run of it as CI's.

The short run is the real thing at a small scale: ``python -m benchmarks.soak --minutes 2
--seed 1 --games 40 --compression 40`` against a real ``twistd faf-replay`` and MariaDB in a
private network namespace, every kind of fault at least once and a storm (several at once).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase, TestCase

from benchmarks.soak import checks, flat
from benchmarks.soak.faults import Done, spooled
from benchmarks.soak.plan import (
    KINDS,
    RESTARTS_UNTIL,
    GamePlan,
    Scale,
    UploadPlan,
    WatchPlan,
    plan,
    server_timers,
)
from benchmarks.soak.players import GameLog, WatchLog
from benchmarks.soak.run import server_environment
from benchmarks.soak.stack import GAME_PORT, WS_PORT, Network
from faf_replay.save.vault import encode_replay, vault_path
from tests.support.netns import namespace_for
from tests.support.paths import REPOSITORY
from tests.support.recordings import recording, split
from tests.support.requirements import unavailable

SHORT_RUN = ["--minutes", "2", "--seed", "1", "--games", "40", "--compression", "40"]


class Plans(SynchronousTestCase):
    def test_a_seed_names_one_plan(self):
        self.assertEqual(plan(3, 5, Scale(30, 40)), plan(3, 5, Scale(30, 40)))
        self.assertNotEqual(plan(3, 5, Scale(30, 40)).games, plan(3, 6, Scale(30, 40)).games)

    def test_a_short_run_has_every_fault_and_a_storm(self):
        short = plan(2, 1, Scale(40, 40))
        kinds = {fault.kind for fault in short.faults}
        self.assertEqual(kinds | {"blackhole"}, set(KINDS))
        # a player vanishing in a game no restart cuts first (one in the restarts' quarter was)
        late = [g for g in short.games if g.start > short.seconds * RESTARTS_UNTIL + 8]
        self.assertTrue(any(u.vanishes_at is not None for g in late for u in g.uploads))
        self.assertTrue(any(fault.storm for fault in short.faults if fault.kind == "kill"))
        self.assertTrue(all(0 < fault.at < short.seconds for fault in short.faults if fault.kind != "loss"))

    def test_restarts_leave_the_last_three_quarters_to_one_life(self):
        hour = plan(60, 7, Scale(200, 10))
        restarts = [fault.at for fault in hour.faults if fault.kind in ("kill", "deploy")]
        self.assertGreaterEqual(len(restarts), 4)
        self.assertLess(max(restarts), hour.seconds / 4)
        others = [fault.at for fault in hour.faults if fault.kind in ("db-kill", "vault-full")]
        self.assertGreater(max(others), hour.seconds / 2)  # the other faults go on

    def test_slopes_are_judged_when_the_last_life_outlives_its_settling(self):
        # The hour: 45 minutes after the restarts, 25 of settling, 20 fitted.
        self.assertTrue(plan(60, 7, Scale(200, 10)).judges_slopes)
        self.assertTrue(plan(40, 7, Scale(200, 10)).judges_slopes)
        self.assertFalse(plan(39, 7, Scale(200, 10)).judges_slopes)
        self.assertTrue(plan(30, 7, Scale(200, 10), one_life=True).judges_slopes)
        self.assertFalse(plan(2, 1, Scale(40, 40)).judges_slopes)  # CI's short run

    def test_one_life_has_no_restart_and_the_seeds_games(self):
        hour, one = plan(60, 7, Scale(200, 10)), plan(60, 7, Scale(200, 10), one_life=True)
        self.assertEqual(one.games, hour.games)
        kinds = {fault.kind for fault in one.faults}
        self.assertEqual(kinds | {"blackhole"}, set(KINDS) - {"kill", "deploy"})
        self.assertFalse(any(fault.storm for fault in one.faults))

    def test_games_keep_about_as_many_running_as_asked(self):
        hour = plan(60, 3, Scale(200, 10))
        middle = 1800.0
        running = sum(1 for game in hour.games if game.start <= middle <= game.start + game.length)
        self.assertTrue(150 <= running <= 250, running)
        self.assertEqual({len(game.uploads) for game in hour.games}, {2, 4, 6, 8})

    def test_the_server_runs_without_the_shells_rust_backtrace(self):
        # with it, the parser's first panic keeps ~35 MiB: a step in the memory slopes
        env = server_environment({"RUST_BACKTRACE": "1", "PATH": "/bin"}, "secret")
        self.assertEqual(env, {"PATH": "/bin", "FAF_REPLAY_DB_PASSWORD": "secret"})

    def test_timers_are_production_divided_by_the_compression(self):
        timers = server_timers(10)
        self.assertEqual((timers["delay"], timers["grace"], timers["stall-timeout"]), (30, 3, 6))
        self.assertEqual(server_timers(40)["keepalive-interval"], 1.0)  # whole seconds for the kernel


class Slopes(SynchronousTestCase):
    def samples(self, per_life, lives=4, step=5.0, each=300.0, warm=0.0):
        out = []
        for life in range(lives):
            for n in range(int(each / step)):
                since = n * step
                value = 100 + per_life(since) + warm * (since < flat.WARM_UP)
                out.append(flat.Sample(life * each + since, life + 1, since, {"rss_mib": value}))
        return out

    def test_restarts_are_no_trend(self):
        # Each life starts at 100 MiB and stays there after a spike at its start: flat.
        samples = self.samples(lambda since: 0.0, warm=50)
        self.assertAlmostEqual(flat.slope_within_lives(samples, "rss_mib", 0), 0.0)

    def test_a_leak_within_lives_is_seen(self):
        # 1 MiB a minute in every life, though each restart starts low again.
        samples = self.samples(lambda since: since / 60)
        self.assertAlmostEqual(flat.slope_within_lives(samples, "rss_mib", 0), 60.0, places=6)
        judged = flat.slopes(samples, 1200, series_warm_up={})
        self.assertFalse(judged["rss_mib"]["flat"])

    def test_a_falling_series_is_no_leak(self):
        # Memory given back at the same load (1 MiB a minute less): flat, as growth is what
        # the bound is about; the same rate upward is not.
        falling = flat.slopes(self.samples(lambda since: -since / 60), 1200, series_warm_up={})
        self.assertEqual((falling["rss_mib"]["per_hour"], falling["rss_mib"]["flat"]), (-60.0, True))
        rising = flat.slopes(self.samples(lambda since: since / 60), 1200, series_warm_up={})
        self.assertFalse(rising["rss_mib"]["flat"])

    def test_a_fit_from_a_later_second_leaves_out_what_came_before(self):
        # One life: a step of 40 MiB at 600 s (a one-time cache), flat before and after.
        samples = self.samples(lambda since: 40.0 * (since >= 600), lives=1, each=1800)
        whole = flat.slopes(samples, 1800, series_warm_up={})["rss_mib"]
        after = flat.slopes(samples, 1800, start=630, series_warm_up={})["rss_mib"]
        self.assertFalse(whole["flat"])
        self.assertEqual((after["per_hour"], after["flat"]), (0.0, True))

    def test_the_resident_memory_is_judged_once_its_life_settled(self):
        # One life of 45 minutes: the heaps fragment to their shape in the first 25 (12 MiB,
        # nothing in use growing), then stay: flat. The same rise after the settling is not.
        settles = self.samples(lambda since: 12 * min(since, 1500) / 1500, lives=1, each=2700)
        judged = flat.slopes(settles, 2700, start=0)["rss_mib"]
        self.assertEqual((judged["per_hour"], judged["flat"], judged["warm_up_seconds"]), (0.0, True, 1500))
        self.assertFalse(flat.slopes(settles, 2700, start=0, series_warm_up={})["rss_mib"]["flat"])
        leaks = self.samples(lambda since: 12 * since / 1500, lives=1, each=2700)
        self.assertFalse(flat.slopes(leaks, 2700, start=0)["rss_mib"]["flat"])
        # A last life too short to settle gives no slope: not flat, not passed.
        short = flat.slopes(self.samples(lambda since: 0.0, lives=3, each=900), 2700, start=0)["rss_mib"]
        self.assertEqual((short["per_hour"], short["flat"]), (None, False))

    def test_the_load_climbing_after_a_restart_is_no_trend(self):
        # A new life starts with no games: its connections climb, and its memory with them
        # (1 MiB per 100 connections), but at a given load it does not grow.
        def samples(leak_per_minute):
            out = []
            for life in range(4):
                for n in range(60):
                    since = n * 5.0
                    connections = 10 * min(since, 200.0)
                    value = 100 + connections / 100 + leak_per_minute * since / 60
                    values = {"rss_mib": value, "uploads": connections}
                    out.append(flat.Sample(life * 300 + since, life + 1, since, values))
            return out

        self.assertAlmostEqual(flat.slope_within_lives(samples(0.0), "rss_mib", 0), 0.0, places=6)
        self.assertAlmostEqual(flat.slope_within_lives(samples(1.0), "rss_mib", 0), 60.0, places=6)

    def test_games_growing_at_a_constant_number_are_no_trend(self):
        # As many games all along, but each life's games are young at first: the bytes they
        # hold climb, and memory with them (a merged body each), without any leak.
        out = []
        for life in range(4):
            for n in range(60):
                since = n * 5.0
                held = min(since, 200.0) / 10 + (n % 7)  # MiB, with some wobble
                values = {"heap_kblocks": 100 + 1.5 * held, "uploads": 1000.0 + n % 3, "held_mib": held}
                out.append(flat.Sample(life * 300 + since, life + 1, since, values))
        self.assertAlmostEqual(flat.slope_within_lives(out, "heap_kblocks", 0), 0.0, places=6)
        without = [
            flat.Sample(s.at, s.life, s.since_start, {k: v for k, v in s.values.items() if k != "held_mib"})
            for s in out
        ]
        self.assertGreater(flat.slope_within_lives(without, "heap_kblocks", 0), 100)

    def test_a_high_water_mark_is_no_trend(self):
        # The load rises and falls; resident memory keeps the mark of the busiest moment so
        # far (1 MiB per 100 uploads) and never falls: no leak. The live blocks follow the load.
        def samples(leak_per_minute):
            out = []
            for life in range(2):
                highest = 0.0
                for n in range(240):
                    since = n * 5.0
                    uploads = 1000 + 600 * math.sin(since / 150) + 50 * (n % 5)
                    highest = max(highest, uploads)
                    values = {
                        "rss_mib": 100 + highest / 100 + leak_per_minute * since / 60,
                        "heap_kblocks": 300 + uploads / 10,
                        "uploads": uploads,
                    }
                    out.append(flat.Sample(life * 1200 + since, life + 1, since, values))
            return out

        self.assertAlmostEqual(flat.slope_within_lives(samples(0.0), "rss_mib", 0), 0.0, places=6)
        self.assertAlmostEqual(flat.slope_within_lives(samples(0.0), "heap_kblocks", 0), 0.0, places=6)
        self.assertAlmostEqual(flat.slope_within_lives(samples(0.1), "rss_mib", 0), 6.0, places=6)

    def test_uploads_and_watchers_are_apart(self):
        # An upload holds two descriptors (socket, spool file), a watcher one; as a life's
        # games age, watchers replace uploads at the same number of connections.
        out = []
        for n in range(240):
            uploads, watchers = 1000.0 - 2 * n + 30 * (n % 4), 200.0 + 2 * n + 20 * (n % 3)
            values = {"fds": 20 + 2 * uploads + watchers, "uploads": uploads, "watchers": watchers}
            out.append(flat.Sample(n * 5.0, 1, n * 5.0, values))
        self.assertAlmostEqual(flat.slope_within_lives(out, "fds", 0), 0.0, places=6)

    def test_noise_gives_the_slope_its_error(self):
        rng = random.Random(4)
        flat_but_noisy = self.samples(lambda since: rng.gauss(0, 2))
        slope, error = flat.fit(flat_but_noisy, "rss_mib", 0)
        self.assertGreater(error, 0)
        self.assertLess(abs(slope), 3 * error)
        leaking = self.samples(lambda since: since / 60 + rng.gauss(0, 2))
        slope, error = flat.fit(leaking, "rss_mib", 0)
        self.assertLess(abs(slope - 60), 3 * error)
        self.assertGreater(slope, 5 * error)

    def test_the_plot_has_a_panel_per_series(self):
        samples = self.samples(lambda since: 0.0)
        svg = flat.plot(samples, 1200, flat.slopes(samples, 1200), "t")
        self.assertEqual(svg.count("<polyline"), 1)  # only rss_mib has values
        self.assertEqual(svg.count("slope"), len(flat.SERIES))


def game_log(recordings: list[str], game_id: int = 1_000_000) -> GameLog:
    uploads = tuple(UploadPlan(name, "tcp") for name in recordings)
    header = len(split(recording(recordings[0]))[0])
    return GameLog(GamePlan(game_id, 0.0, 10.0, uploads, ()), header, open_uploads=0)


def save(vault: Path, game_id: int, stream: bytes) -> None:
    """A replay file as the server writes it (JSON line, zstd frame)."""
    path = vault_path(vault, game_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_replay({"uid": game_id, "version": 2, "compression": "zstd"}, stream, 3))


class Checks(SynchronousTestCase):
    """The end checks judge saved files with FAF's parser against what the players sent."""

    def setUp(self):
        self.vault = Path(self.mktemp())
        self.vault.mkdir()
        self.verdicts = checks.Verdicts()
        self.kill = [Done("kill", 10.0, 11.0, False)]

    def judge(self, log: GameLog, durable=(), done=(), rows=None):
        rows = rows if rows is not None else {log.plan.id: (1, None)}
        return checks.check_game(
            self.verdicts, log, vault=self.vault, rows=rows, done=list(done), durable=list(durable)
        )

    def test_a_game_the_network_lost_every_upload_of_is_judged_as_cut(self):
        """Both players vanished (or a dead-peer verdict cut them): no exactness is owed,
        but the replay must still be a prefix of an upload's body."""
        log = game_log(["example", "example"])
        stream = recording("example")
        log.unfinished = {"p0.SCFAreplay"}
        save(self.vault, log.plan.id, stream[:-100])
        self.judge(log)
        self.assertEqual(self.verdicts.kinds["not exact"], 1)  # p1 sent everything
        log.unfinished = {"p0.SCFAreplay", "p1.SCFAreplay"}
        self.judge(log)
        self.assertEqual((self.verdicts.kinds["not exact"], self.verdicts.cut_by_network), (1, 1))
        save(self.vault, log.plan.id, stream[:-100] + b"?")
        self.judge(log)
        self.assertEqual(self.verdicts.kinds["splice"], 1)

    def test_an_uncut_game_must_be_the_recording_exactly(self):
        log = game_log(["example", "example"])
        stream = recording("example")
        save(self.vault, log.plan.id, stream[:-1])
        self.judge(log)
        self.assertEqual((self.verdicts.lost, self.verdicts.bytes_lost), (1, 1))
        save(self.vault, log.plan.id, stream)
        self.judge(log)
        self.assertEqual(self.verdicts.exact, 1)

    def test_a_cut_game_keeps_at_least_what_was_durable(self):
        log = game_log(["example", "example"])
        stream = recording("example")
        header = len(split(stream)[0])
        durable = [
            ("kill", 10.0, {log.plan.id: {"p0.SCFAreplay": header + 5000, "p1.SCFAreplay": header + 9000}})
        ]
        save(self.vault, log.plan.id, stream[: header + 8999])
        self.judge(log, durable, self.kill)
        self.assertEqual((self.verdicts.lost, self.verdicts.bytes_lost), (1, 1))
        save(self.vault, log.plan.id, stream[: header + 9000])
        self.judge(log, durable, self.kill)
        self.assertEqual(self.verdicts.cut_kept, 1)

    def test_a_cut_game_whose_header_was_never_durable_owes_nothing(self):
        log = game_log(["example", "example"])
        self.judge(log, [("kill", 10.0, {log.plan.id: {"p0.SCFAreplay": 100}})], self.kill)
        self.assertEqual((self.verdicts.lost, self.verdicts.nothing_durable), (0, 1))
        self.judge(log, [("kill", 10.0, {log.plan.id: {"p0.SCFAreplay": 4000}})], self.kill)
        self.assertEqual(self.verdicts.lost, 1)

    def test_uploads_that_differ_owe_what_two_of_them_agree_on(self):
        names = [f"diverging_1/{n}" for n in range(6)]
        log = game_log(names)
        header = len(split(recording(names[0]))[0])
        # 0 diverges at body byte 7025 from the others: with 1 it agrees on 7025 bytes only.
        durable = [
            ("kill", 10.0, {log.plan.id: {"p0.SCFAreplay": header + 20000, "p1.SCFAreplay": header + 20000}})
        ]
        kept = checks.floor(log, durable)
        self.assertEqual(kept, (7025, True))

    def test_a_row_must_say_available_with_the_files_ticks(self):
        log = game_log(["example", "example"])
        save(self.vault, log.plan.id, recording("example"))
        self.judge(log, rows={log.plan.id: (1, 1927)})
        self.assertEqual(self.verdicts.kinds["row"], 1)
        self.judge(log, rows={log.plan.id: (1, 1928)})
        self.assertEqual(self.verdicts.rows_ok, 1)

    def test_a_body_whose_ticks_cannot_be_counted_has_none_in_its_row(self):
        log = game_log(["example", "example"])
        header, body = split(recording("example"))
        save(self.vault, log.plan.id, header + b"\x01\x00\x00" + body)  # a command whose size says 0
        self.judge(log, rows={log.plan.id: (1, 1928)})
        self.assertEqual(self.verdicts.kinds["row"], 1)
        self.judge(log, rows={log.plan.id: (1, None)})
        self.assertEqual(self.verdicts.rows_ok, 1)

    def test_a_watcher_gets_no_byte_the_replay_has_not(self):
        log = game_log(["example", "example"])
        _, body = split(recording("example"))
        watch = WatchLog(log.plan.id, WatchPlan(0.0, "tcp", False), connected=True)
        watch.body = 100
        watch.digest = hashlib.sha256(body[:99] + b"?")
        checks.check_watcher(self.verdicts, watch, log, body)
        self.assertEqual(self.verdicts.kinds["watcher bytes"], 1)
        watch.digest = hashlib.sha256(body[:100])
        checks.check_watcher(self.verdicts, watch, log, body[:50])  # an upload's, but not saved
        self.assertEqual(self.verdicts.kinds["watcher extra bytes"], 1)
        watch.digest = hashlib.sha256(body[:100])
        watch.early.append((1.0, 100, 40))
        checks.check_watcher(self.verdicts, watch, log, body)
        self.assertEqual(self.verdicts.kinds["watcher early"], 1)

    def test_the_delay_is_judged_from_when_the_players_sent(self):
        log = game_log(["example", "example"])
        log.body_sent(100.0, 500)
        log.body_sent(101.0, 900)
        self.assertEqual([log.most_sent_by(t) for t in (99.0, 100.0, 100.5, 101.0)], [0, 500, 500, 900])

    def test_the_spool_is_read_from_outside(self):
        spool = Path(self.mktemp())
        (spool / "games" / "7").mkdir(parents=True)
        (spool / "games" / "7" / "0.upload").write_bytes(b"p0.SCFAreplay\0" + b"x" * 10)
        (spool / "games" / "7" / "record.json").write_text("{}")
        self.assertEqual(spooled(spool), {7: {"p0.SCFAreplay": 10}})


def received(connection: socket.socket, timeout: float) -> bytes:
    """One byte from ``connection`` if it comes within ``timeout`` seconds, else ``b""``."""
    connection.settimeout(timeout)
    try:
        return connection.recv(1)
    except TimeoutError:
        return b""


class Blackhole(TestCase):
    """The soak's :class:`Network` blackholes one connection, named by its pair (client port,
    server port), in a network namespace of the test's own (root, nftables)."""

    timeout = 60

    def open_socket(self) -> socket.socket:
        made = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(made.close)  # before the namespace is deleted (cleanups run last first)
        made.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return made

    def listen(self, port: int) -> socket.socket:
        listening = self.open_socket()
        listening.bind(("127.0.0.1", port))
        listening.listen()
        listening.settimeout(5)
        return listening

    def client(self, port: int, server_port: int) -> socket.socket:
        """A client socket bound to ``port`` and connected to ``server_port``."""
        connection = self.open_socket()
        connection.bind(("127.0.0.1", port))
        connection.settimeout(2)
        try:
            connection.connect(("127.0.0.1", server_port))
        except OSError as error:
            self.fail(f"client port {port} could not connect to {server_port}: {error!r}")
        return connection

    def test_a_client_port_reused_for_the_other_server_port_passes(self):
        """The kernel gives a connection to WS_PORT the client port of a blackholed one to
        GAME_PORT while that one still holds it (as in soak game 1001411, whose upload went
        silent beside game 1001450's vanishing one): only the blackholed connection drops."""
        namespace = namespace_for(self)
        with namespace.entered():
            network = Network()
            game, ws = self.listen(GAME_PORT), self.listen(WS_PORT)
            probe = self.open_socket()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()

            vanishing = self.client(port, GAME_PORT)
            vanishing_served, _ = game.accept()
            self.addCleanup(vanishing_served.close)
            network.blackhole(port, GAME_PORT)

            other = self.client(port, WS_PORT)  # same client port, the other server port
            other_served, _ = ws.accept()
            self.addCleanup(other_served.close)
            self.assertEqual(other.getsockname()[1], vanishing.getsockname()[1])
            other.sendall(b"o")
            self.assertEqual(received(other_served, 2), b"o")
            other_served.sendall(b"O")
            self.assertEqual(received(other, 2), b"O")

            vanishing.sendall(b"v")
            vanishing_served.sendall(b"V")
            self.assertEqual(received(vanishing_served, 1), b"", "the blackholed client's byte arrived")
            self.assertEqual(received(vanishing, 0.1), b"", "the server's byte to it arrived")
            dropped = network.counters()
            self.assertGreater(dropped.get("vanished", 0), 0, dropped)
            self.assertGreater(dropped.get("vanished back", 0), 0, dropped)

            network.release(port, GAME_PORT)
            # TCP sends both bytes again on its own (backing off: within a few seconds)
            self.assertEqual(received(vanishing_served, 10), b"v")
            self.assertEqual(received(vanishing, 10), b"V")


class ShortRun(TestCase):
    """CI's soak: two minutes, seed 1, every fault; nothing lost, nothing wrong."""

    timeout = 1200

    def test_two_minutes_of_faults_lose_nothing(self):
        if os.geteuid() != 0 or not shutil.which("nft", path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")):
            unavailable("NETNS", "the soak needs root and nftables", "as root: apt-get install nftables")
        report = Path(self.mktemp()).resolve()  # the soak runs from the repository
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.soak", *SHORT_RUN, f"--report={report}"],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=1100,
            check=False,
        )
        if not report.exists():
            self.fail(f"no report (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        outcome = json.loads(report.read_text())
        summary = done.stdout[-6000:]
        self.assertEqual((outcome["replays_lost"], outcome["bytes_lost"]), (0, 0), summary)
        self.assertEqual(outcome["problems"], [], summary)
        self.assertEqual([kind for kind, count in outcome["faults"].items() if count == 0], [], summary)
        self.assertGreater(outcome["faults_overlapping"], 0)
        self.assertGreater(outcome["exact"], 0)
        self.assertGreater(outcome["cut_kept_durable"], 0)
        self.assertGreater(outcome["watchers_whole"], 0)
        self.assertEqual(done.returncode, 0, summary)

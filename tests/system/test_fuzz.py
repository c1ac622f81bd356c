"""Seeded fuzzing of the running server, over real TCP and WebSocket.

A real ``twistd faf-replay`` (``tests/processes.run_twistd``, JSON log, fast
timers, its own vault and ``--spool``) gets batches of fuzzed games beside
honest ones (``tests/support/mutations.py`` builds both from the recordings in
tests/data): mutated recordings, random and half-sent connection headers,
garbage after a valid header, several connections per game, watchers of fuzzed
games; honest games are real recordings uploaded whole by two or more
uploaders in small pieces, with watchers, some with an intruder. Asserted:

1. the server stays up throughout and exits 0 on SIGTERM;
2. every honest game is saved byte-exact, and its watchers got exactly the
   saved replay; every other saved file reads back (``fafreplay``, its JSON
   line names the game); a fuzzed game whose uploads all sent the same bytes
   is saved as sent (at most ``--max-upload-bytes`` of it), or not at all when
   its replay header is one the server refuses; any other, from what the
   server says it received of each upload: a replay exists when one upload
   completed a header, it is one upload's header with a prefix of one
   upload's body (never a splice), it holds every byte a quorum of uploads
   agreed on, and it is a whole upload when a quorum sent the same body
   (``tests.support.mutations.saved_problem``; unless the merge stopped waiting for a
   stalled voter). Some cases are made for that: two honest uploads and a
   faster desynced one (``outvoted``);
3. the log has no ``critical`` line and no traceback (``log_failure``,
   "Traceback", "Unhandled");
4. every connection that sent at least 2 bytes has a log line naming it
   (``127.0.0.1:<its port>``); one that sent fewer and closed has none about
   no game (a line about a game names another client, on a reused port);
5. after a restart on the same spool (recover, save, SIGTERM) nothing is left
   in ``<spool>/games/`` but what went to ``<spool>/quarantine/``.

Seeding: the cases are drawn with hypothesis from a fixed seed
(:data:`SEED`, or ``FAF_REPLAY_FUZZ_SEED``) by ``tests.support.mutations.draw``, so CI
runs the same cases every time (:data:`CI_BATCHES` batches of :data:`CI_HONEST`
honest games and :data:`CI_CASES` fuzzed cases, about 50 s); every finding
prints as the Python that rebuilds its case. Where a property is pure (the
mutations themselves, the server's parsers under them) it is a plain
hypothesis test, and hypothesis shrinks what fails. The long run is
``python -m benchmarks.fuzz --minutes N [--seed S]`` (it also kills servers
mid-batch, and shrinks what it finds); what the fuzzing found became the named
regression tests at the end of this file.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import fafreplay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import inlineCallbacks
from twisted.logger import LogLevel, eventAsJSON
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from faf_replay.accept.header import ConnectionHeaderError, ConnectionHeaderParser
from faf_replay.replay.replay_header import ReplayHeaderError, ReplayHeaderScanner
from faf_replay.save.metadata import header_facts
from faf_replay.save.vault import vault_path
from tests.support.clients import connect
from tests.support.fuzz_server import (
    OPTIONS,
    SEED,
    Client,
    ServerLog,
    code,
    connect_websocket,
    sleep,
    wait_for,
)
from tests.support.fuzzing import (
    FuzzRun,
    fuzz,
    report,
)
from tests.support.mutations import (
    ALL,
    FUZZ_IDS,
    POISON,
    Batch,
    Case,
    Connection,
    FlipBit,
    Honest,
    Insert,
    SetBytes,
    SetSize,
    Truncate,
    Uploading,
    batches,
    cases,
    draw,
    fields_of,
    header_end,
    mutate,
    mutated,
    poison,
    random_headers,
    saved_problem,
    simpler_batches,
)
from tests.support.recordings import recording, split

#: What CI runs: batches of honest games and fuzzed cases.
CI_BATCHES, CI_HONEST, CI_CASES = 24, 2, 16


class Mutations(SynchronousTestCase):
    """The mutation operators themselves, and the server's pure parsers under
    the same mutations (hypothesis shrinks what fails here)."""

    def test_header_fields_end_where_fafreplay_says(self):
        for name in ALL:
            stream = recording(name)
            self.assertEqual(header_end(stream), fafreplay.body_offset(stream), name)
            self.assertEqual(stream[: header_end(stream)], split(stream)[0])

    @settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mutated())
    def test_mutations_are_deterministic_and_print_as_code(self, found):
        name, mutations = found
        namespace = {
            "FlipBit": FlipBit,
            "SetBytes": SetBytes,
            "Truncate": Truncate,
            "Insert": Insert,
            "SetSize": SetSize,
        }
        rebuilt = tuple(eval(code(m), namespace) for m in mutations)
        self.assertEqual(rebuilt, mutations)
        self.assertEqual(mutate(name, rebuilt), mutate(name, mutations))

    @settings(max_examples=100, derandomize=True, deadline=None)
    @given(st.sampled_from(ALL), st.data())
    def test_poison_in_a_lua_table_still_scans_field_by_field(self, name, data):
        lua = [f for f in fields_of(name) if f.kind == "lua" and f.size >= 4]
        table = data.draw(st.sampled_from(lua))
        offset = table.offset + data.draw(st.integers(0, table.size - 4))
        stream = poison(offset).apply(recording(name))
        self.assertEqual(stream[offset : offset + 4], POISON)
        self.assertEqual(header_end(stream), header_end(recording(name)))
        self.assertEqual(ReplayHeaderScanner().feed(stream), header_end(recording(name)))

    @settings(max_examples=100, derandomize=True, deadline=None)
    @given(st.sampled_from(ALL), st.data(), st.integers(0, 2**32 - 1))
    def test_set_size_writes_the_named_field(self, name, data, value):
        sizes = [f for f in fields_of(name) if f.kind == "size"]
        target = data.draw(st.sampled_from(sizes))
        stream = SetSize(target.name, value).apply(recording(name))
        self.assertEqual(int.from_bytes(stream[target.offset : target.offset + 4], "little"), value)
        self.assertEqual(stream[: target.offset], recording(name)[: target.offset])

    @settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mutated(), st.lists(st.integers(1, 5000), min_size=1, max_size=6))
    def test_the_server_scanner_agrees_at_any_split(self, found, pieces):
        """The server's header scanner: the same answer fed whole or in pieces,
        only ReplayHeaderError on bad input, and (within 1 MiB) the answer of
        the walk in tests/support/mutations.py."""
        stream = mutate(*found)
        whole = _scan(stream, [len(stream) or 1])
        self.assertEqual(_scan(stream, pieces), whole)
        if not isinstance(whole, str):
            self.assertEqual(whole, header_end(stream))

    @settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mutated())
    def test_header_facts_of_any_scanned_header(self, found):
        """What the save takes from a header never raises (a PyO3 panic is a
        BaseException) and always makes a JSON line."""
        stream = mutate(*found)
        end = header_end(stream)
        if end is None or end > 1024 * 1024:
            return
        facts = header_facts(stream[:end])
        json.dumps(facts)

    @settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(random_headers(), st.lists(st.integers(1, 50), min_size=1, max_size=5))
    def test_connection_headers_at_any_split(self, header, pieces):
        data = header.replace(b"{game}", str(FUZZ_IDS).encode()) + b"rest"
        whole, split_up = _connection_header(data, [len(data)]), _connection_header(data, pieces)
        self.assertEqual(split_up, whole)

    @settings(max_examples=30, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(batches(2, 3))
    def test_each_shrinking_step_is_simpler(self, batch):
        """What ``benchmarks/fuzz.py`` tries when it shrinks a finding: each
        candidate differs and prints no longer (no step goes round in circles)."""
        for candidate in simpler_batches(batch):
            self.assertNotEqual(candidate, batch)
            self.assertLessEqual(len(code(candidate)), len(code(batch)))

    def test_draw_is_reproducible(self):
        first = draw(cases(), 5, 7)
        self.assertEqual(draw(cases(), 5, 7), first)
        self.assertEqual(len(first), 5)

    def test_draw_does_not_depend_on_loaded_modules(self):
        """Hypothesis mines constants from the project's loaded modules; a
        module loaded between two draws must not change what a seed draws."""
        first = draw(batches(1, 4), 3, 5)
        folder = Path(self.mktemp()) / "constants_here"
        folder.mkdir(parents=True)
        numbers = ", ".join(str(n) for n in range(100, 2000, 37))  # a module's worth: Hypothesis skips more
        (folder / "many_constants.py").write_text(f"NUMBERS = ({numbers})\nWORDS = {{'G/', 'P/', 'army'}}\n")
        sys.path.insert(0, str(folder))
        self.addCleanup(sys.path.remove, str(folder))
        self.addCleanup(sys.modules.pop, "many_constants", None)
        importlib.import_module("many_constants")
        self.assertEqual(draw(batches(1, 4), 3, 5), first)

    def setUp(self) -> None:
        """A panic in ``fafreplay`` prints its backtrace when RUST_BACKTRACE asks
        (Rust reads it at the first panic of the process): not here."""
        before = os.environ.get("RUST_BACKTRACE")
        os.environ["RUST_BACKTRACE"] = "0"
        self.addCleanup(
            lambda: (
                os.environ.pop("RUST_BACKTRACE")
                if before is None
                else os.environ.update(RUST_BACKTRACE=before)
            )
        )


def _scan(stream: bytes, pieces: list[int]) -> int | str | None:
    scanner = ReplayHeaderScanner()
    position, index = 0, 0
    try:
        while position < len(stream):
            size = pieces[index % len(pieces)]
            index += 1
            found = scanner.feed(stream[position : position + size])
            position += size
            if found is not None:
                return found
    except ReplayHeaderError:
        return "invalid"
    return None


def _connection_header(data: bytes, pieces: list[int]) -> Any:
    parser = ConnectionHeaderParser()
    position, index, rest = 0, 0, b""
    try:
        while position < len(data):
            size = pieces[index % len(pieces)]
            index += 1
            found = parser.feed(data[position : position + size])
            position += size
            if found is not None:
                header, rest = found
                return header, rest + data[position:]
    except ConnectionHeaderError:
        return "invalid"
    return None


class Checks(SynchronousTestCase):
    """The checks themselves: what the log parser counts as a problem, whom a
    line names, what the honest oracle accepts."""

    def lines(self, *events: dict) -> ServerLog:
        log = ServerLog()
        log.feed(b"".join(eventAsJSON(event).encode() + b"\n" for event in events))
        return log

    def event(self, text: str, level: LogLevel = LogLevel.info, **values: Any) -> dict:
        return {"log_format": text, "log_level": level, "log_namespace": "faf_replay.x", **values}

    def test_critical_lines_and_tracebacks_are_problems(self):
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            failure = Failure()
        log = self.lines(
            self.event("game {game_id}: saved", game_id=5),
            self.event("game {game_id}: saving failed", LogLevel.critical, game_id=6, log_failure=failure),
            self.event("something {what}", LogLevel.critical, what="bad"),
            self.event("Unhandled error in Deferred:", LogLevel.error),
        )
        self.assertEqual([p.what for p in log.problems], ["traceback", "critical", "traceback"])
        self.assertEqual(log.problems[0].game_id, 6)
        self.assertIn("ZeroDivisionError", log.problems[0].text)
        log.feed(b"not json at all\n")
        log.feed_stderr(b"Traceback (most recent call last):\n")
        self.assertEqual(log.problems[-1].what, "foreign traceback")
        self.assertEqual(log.count, 5)

    def test_a_line_names_a_client_by_its_port(self):
        log = self.lines(
            self.event("connection from {peer} rejected", peer="127.0.0.1:4123"),
            self.event("game 1: replay started", game_id=1),
            self.event("ReplayFactory starting on 15000"),
        )
        self.assertTrue(log.names(4123, since=0))
        self.assertFalse(log.names(4123, since=1))  # a line before the client connected
        self.assertFalse(log.names(412, since=0))
        self.assertFalse(log.names(41234, since=0))
        self.assertTrue(log.names_without_a_game(4123, since=0))
        watcher = self.event("game {game_id}: watcher from {peer} left", game_id=1, peer="127.0.0.1:4123")
        later = self.lines(watcher)
        self.assertTrue(later.names(4123, since=0))
        self.assertFalse(later.names_without_a_game(4123, since=0))  # another client's, on a reused port
        self.assertEqual(log.started, {1})
        self.assertEqual(log.listening, {"ReplayFactory": 15000})

    def test_the_honest_oracle(self):
        self.assertTrue(Honest("example").accepts(recording("example")))
        self.assertFalse(Honest("example").accepts(mutate("example", (FlipBit(30000, 0),))))
        self.assertFalse(Honest("example").accepts(recording("example")[:-1]))
        diverging = Honest("diverging_1")
        header0 = split(recording("diverging_1/0"))[0]
        self.assertTrue(diverging.accepts(header0 + split(recording("diverging_1/5"))[1]))
        self.assertFalse(diverging.accepts(recording("diverging_1/3")))

    def test_the_oracle_of_games_whose_uploads_differ(self):
        stream = recording("example")
        header, whole = split(stream)
        flipped = mutate("example", (FlipBit(30000, 0),))  # its body differs from byte 30000 - 1966
        differs_at = 30000 - len(header)
        self.assertEqual(flipped[len(header) :][:differs_at], whole[:differs_at])
        agreeing = [stream, stream, flipped]
        for replay, problem in [
            (stream, None),  # saved whole
            (None, "nothing saved, though 3 upload(s) completed a replay header"),
            (header, "lacks the 41578 bytes 2 uploads agreed on"),
            (header + whole[:20000], "lacks the 41578 bytes"),
            (flipped, "lacks the 41578 bytes"),  # the one mutated upload won
            (header + whole[:-1] + b"x", "is no prefix of an upload's body"),
            (b"junk" + whole, "is no upload's"),
        ]:
            found = saved_problem(replay, agreeing, 2, stalled=False)
            self.assertEqual(found is None, problem is None, (replay and len(replay), found))
            if problem is not None:
                self.assertIn(problem, found)
        # A longer upload that goes on from the agreed body supplies the end.
        longer = stream + recording("8805603")[2000:3000]
        self.assertIsNone(saved_problem(longer, [stream, stream, longer], 2, stalled=False))
        partly = longer[: len(stream) + 100]  # neither the agreed body nor the longer one
        self.assertIn("same 41578-byte body", saved_problem(partly, [stream, stream, longer], 2, False))
        # No quorum on the whole: a prefix, but never less than what two agreed on.
        other = mutate("example", (FlipBit(35000, 0),))
        self.assertIsNone(saved_problem(header + whole[: differs_at + 5], [flipped, other], 2, False))
        short = header + whole[: differs_at - 1]
        self.assertIn("lacks the", saved_problem(short, [flipped, other], 2, False))
        self.assertIn("nothing saved", saved_problem(None, [flipped, other], 2, False))
        # A stalled voter: fewer may decide, so any prefix of one upload.
        self.assertIsNone(saved_problem(header, agreeing, 2, stalled=True))
        # No upload completed a header: nothing to save.
        self.assertIsNone(saved_problem(None, [stream[:1000], b"garbage"], 2, False))
        self.assertIn("no upload completed", saved_problem(stream, [stream[:1000]], 2, False))

    def test_cases_print_as_the_python_that_rebuilds_them(self):
        namespace = {
            "Batch": Batch,
            "Case": Case,
            "Connection": Connection,
            "Honest": Honest,
            "Uploading": Uploading,
            "FlipBit": FlipBit,
            "SetBytes": SetBytes,
            "Truncate": Truncate,
            "Insert": Insert,
            "SetSize": SetSize,
        }
        for batch in draw(batches(2, 4), 3, 11):
            self.assertEqual(eval(code(batch), namespace), batch)


class QuietServer(TestCase):
    """A server that logs too little is caught: read without the upload
    module's lines, an upload that ended well has no line, and the fuzzing says so."""

    timeout = 60

    @inlineCallbacks
    def test_a_connection_without_a_line_is_a_finding(self):
        case = Case((Connection("P", recording="8805603"),))
        directory = Path(self.mktemp())
        run = FuzzRun(self, directory)
        run.line_timeout = 2
        yield run.start()
        run.server.log.ignore.add("faf_replay.replay.upload")
        yield run.run_batch(Batch((), (case,)))
        yield run.stop()
        self.assertEqual([f.kind for f in run.findings], ["no logged outcome"])
        self.assertIs(run.findings[0].subject, case)


class ServerFuzz(TestCase):
    """CI's share of the fuzzing: :data:`CI_BATCHES` batches of
    :data:`CI_HONEST` honest games and :data:`CI_CASES` fuzzed cases against
    one server, SIGTERM, a restart on the same spool, SIGTERM."""

    timeout = 300

    @inlineCallbacks
    def test_fuzzed_server(self):
        started = time.monotonic()
        batch_list = draw(batches(CI_HONEST, CI_CASES), CI_BATCHES + 1, SEED)[
            1:
        ]  # [0] is hypothesis' simplest
        run = yield fuzz(self, Path(self.mktemp()), batch_list)
        print(f"\n    fuzz (seed {SEED}): {run.summary()}; {time.monotonic() - started:.1f} s")
        if run.findings:
            self.fail(f"{len(run.findings)} finding(s) with seed {SEED}:\n\n{report(run)}")


class Regressions(TestCase):
    """What the fuzzing found, each the smallest case that shows it: a
    recording from tests/data and its mutation."""

    timeout = 120

    @inlineCallbacks
    def check(self, *items: Case | Honest, restart: bool = True):
        batch = Batch(
            tuple(i for i in items if isinstance(i, Honest)), tuple(i for i in items if isinstance(i, Case))
        )
        run = yield fuzz(self, Path(self.mktemp()), [batch], restart=restart)
        if run.findings:
            self.fail(report(run))
        return run

    @inlineCallbacks
    def test_poisoned_lua_in_the_header(self):
        """The known poison: ``ff ff ff 7f`` inside the scenario table of
        example.scfareplay still scans, but ``Parser().parse_header()`` panics
        (a PyO3 PanicException, a BaseException). Two uploaders: the game must
        be saved as sent (or, at worst, quarantined), with no critical line."""
        upload = Connection("P", recording="example", mutations=(poison(293),))
        self.assertEqual(header_end(mutate("example", (poison(293),))), 1966)
        run = yield self.check(Case((upload, upload)), Honest("8805603"))
        game_id = FUZZ_IDS
        path = vault_path(run.vault, game_id)
        if path.exists():
            self.assertEqual(
                fafreplay.extract_scfa(io.BytesIO(path.read_bytes())), mutate("example", (poison(293),))
            )
        else:
            self.assertIn(game_id, [found for found, _ in run.quarantined()])

    @inlineCallbacks
    def test_a_slow_websocket_watcher_gets_the_whole_replay(self):
        """Found while chasing a false alarm of the harness (see
        :func:`connect_websocket`): the server ends a WebSocket watcher with a
        close frame and ``closeHandshakeTimeout=5`` (``faf_replay/accept/websocket.py``;
        4 to 5 s, txaio floors its deadlines to a whole second), then drops the
        TCP connection: a watcher still reading what the server's buffers hold
        loses the end of the replay, while the log says "whole replay sent".
        Over TCP the same watcher gets every byte (``loseConnection`` waits for
        the buffers). The input: example.scfareplay with its body 40 times
        (1.7 MB, a long game), one uploader, one watcher reading 64 KiB every
        0.25 s. Fails until the server waits for its buffers before it closes."""
        header, body_ = split(recording("example"))
        stream = header + body_ * 40
        got = {}
        for transport in ("tcp", "ws"):
            got[transport] = yield self.slow_watcher(transport, stream)
        self.assertEqual(got, {"tcp": len(stream), "ws": len(stream)})

    @inlineCallbacks
    def slow_watcher(self, transport: str, stream: bytes):
        """Bytes a watcher reading 64 KiB every 0.25 s gets of ``stream``."""
        options = tuple(o for o in OPTIONS if not o.startswith("--max-upload-bytes"))
        run = FuzzRun(self, Path(self.mktemp()), options)
        server = yield run.start()
        uploader = Client(b"P/7/a.SCFAreplay\0" + stream, pieces=(1 << 20,), then="hold")
        yield connect(server.port, uploader)
        self.assertTrue((yield wait_for(lambda: 7 in server.log.started, 10)))
        watcher = Client(b"G/7/w\0", then="hold")
        yield (
            connect(server.port, watcher)
            if transport == "tcp"
            else connect_websocket(server.ws_port, watcher)
        )
        yield watcher.first_data
        websocket = getattr(watcher.transport, "_websocket", None)
        socket_ = websocket.transport if websocket is not None else watcher.transport
        socket_.pauseProducing()
        yield uploader.sent_all
        uploader.close()  # the game ends: the rest of the replay goes out at once
        while not watcher.closed.called:  # a slow link: one read (64 KiB at most) every 0.25 s
            socket_.resumeProducing()
            yield sleep(0)
            socket_.pauseProducing()
            yield sleep(0.25)
        yield run.stop()
        return len(watcher.received)

    @inlineCallbacks
    def test_the_websocket_handshake_timeout_is_not_cut_short(self):
        """``--ws-handshake-timeout`` is "seconds a WebSocket client has for its
        opening handshake", but autobahn times it with txaio's batched timer,
        which floors the deadline to a whole second: a client that connects at
        x.9 s with a 1.5 s timeout is dropped 1.1 s later (and any timeout under
        1 s can fire at once). Fails until the server times the handshake itself."""
        run = FuzzRun(self, Path(self.mktemp()), (*OPTIONS, "--ws-handshake-timeout=1.5"))
        server = yield run.start()
        yield sleep((1.9 - time.time() % 1) % 1)  # connect just before a whole second
        silent = Client(b"", then="hold")
        started = time.monotonic()
        yield connect(server.ws_port, silent)  # plain TCP: no opening handshake at all
        yield silent.closed
        waited = time.monotonic() - started
        yield run.stop()
        self.assertGreaterEqual(waited, 1.45, f"closed {waited:.2f} s after connecting")

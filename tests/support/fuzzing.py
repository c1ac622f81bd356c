"""The fuzz suite's harness: a batch of cases (``tests/support/mutations.py``) played
against a real server (``tests/support/fuzz_server.py``), and every check on what came
of it (:class:`FuzzRun`), for the tests (``tests/system/test_fuzz.py``) and the long
run (``python -m benchmarks.fuzz``).
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fafreplay
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.task import LoopingCall

from faf_replay.save.vault import vault_path
from tests.support.clients import connect
from tests.support.fuzz_server import (
    MAX_UPLOAD_BYTES,
    OPTIONS,
    Client,
    Server,
    code,
    connect_websocket,
    parse_opening,
    sleep,
    wait_for,
)
from tests.support.mutations import (
    FUZZ_IDS,
    HONEST_IDS,
    Batch,
    Case,
    Connection,
    Honest,
    accepted_header_end,
    body,
    header_end,
    saved_problem,
)


@dataclass
class Finding:
    kind: str
    detail: str
    subject: Case | Honest | None = None
    game_id: int | None = None
    lines: list[str] = field(default_factory=list)

    def report(self) -> str:
        out = [f"[{self.kind}] {self.detail}"]
        if self.game_id is not None:
            out.append(f"  game {self.game_id}")
        if self.subject is not None:
            out.append(f"  case: {code(self.subject)}")
        out += [f"  | {line[:1500]}" for line in self.lines]
        return "\n".join(out)


@dataclass
class _Connected:
    client: Client
    subject: Case | Honest
    game_id: int
    connection: Connection | None = None  # None: an honest uploader or watcher


class FuzzRun:
    """Runs batches against one server after another on the same vault and
    spool, and collects what breaks the five rules (module docstring)."""

    def __init__(self, owner: Any, directory: Path, options: tuple[str, ...] = OPTIONS) -> None:
        self.owner = owner
        self.directory = directory = directory.resolve()  # twistd runs in a folder of its own
        self.vault = directory / "vault"
        self.spool = directory / "spool"
        self.options = options
        #: The server's merge quorum (its default unless the options say).
        self.quorum = next((int(o.split("=", 1)[1]) for o in options if o.startswith("--quorum=")), 2)
        self.server: Server | None = None
        self.servers: list[Server] = []
        self.findings: list[Finding] = []
        self.stats: Counter[str] = Counter()
        #: Every game id a batch used, with what it was.
        self.games: dict[int, Case | Honest] = {}
        #: What each upload of a fuzzed game sent after its connection header.
        self.uploads: dict[int, list[bytes]] = {}
        #: Each upload of a fuzzed game: the server it went to, its client, what
        #: it sent after its connection header.
        self.upload_clients: dict[int, list[tuple[Server, Client, bytes]]] = {}
        self._next_honest = HONEST_IDS
        self._next_fuzz = FUZZ_IDS
        self._connected: list[_Connected] = []
        #: Every connection of the run, for reports (the clients keep what they sent).
        self._all_connected: deque[_Connected] = deque(maxlen=2000)
        #: Honest games whose file and watchers were checked byte for byte.
        self.verified: set[int] = set()
        #: Games a SIGKILL caught before their file was written: the spool kept a
        #: prefix of each upload, so their file holds a prefix of one.
        self.relaxed: set[int] = set()
        #: The batch now running ends with a SIGKILL.
        self.killing = False
        #: Games the server put in quarantine (allowed for a problem with the data itself).
        self.quarantine: list[tuple[int, str, Case | Honest | None]] = []
        #: The longest this process's own reactor was late for a timer (s): a
        #: client stalled that long sees a server's answer that late.
        self.harness_lag = 0.0
        self._probe = LoopingCall(self._measure_lag)
        self._probe_at = 0.0
        #: Seconds the lines of a batch's connections have to show up in the log.
        self.line_timeout = 10.0

    # -- the server ---------------------------------------------------------------------------

    def _measure_lag(self) -> None:
        now = time.monotonic()
        if self._probe_at:
            self.harness_lag = max(self.harness_lag, now - self._probe_at - 0.05)
        self._probe_at = now

    @inlineCallbacks
    def start(self):
        if not self._probe.running:
            self._probe.start(0.05)
            self.owner.addCleanup(lambda: self._probe.running and self._probe.stop())
        server = Server(
            self.owner, self.directory / f"run{len(self.servers)}", self.vault, self.spool, self.options
        )
        self.servers.append(server)
        self.server = server
        yield server.start()
        return server

    @inlineCallbacks
    def stop(self):
        """SIGTERM: the server must exit 0 (assertion 1); its log is checked."""
        server = self.server
        assert server is not None
        was_up = server.up
        exit_code = yield server.stop()
        if not was_up:
            self._add("crash", f"the server had exited on its own with {exit_code}", lines=[server.tail()])
        elif exit_code != 0:
            self._add(
                "exit code",
                f"SIGTERM: exit code {exit_code} (None: still running after 60 s)",
                lines=[server.tail()],
            )
        self._collect_problems(server)
        self.server = None
        return exit_code

    @inlineCallbacks
    def restart_and_check(self, timeout: float = 45):
        """Start again on the same spool, let it recover and save, SIGTERM:
        nothing may be left in ``<spool>/games/`` (assertion 5)."""
        yield self.start()
        yield wait_for(lambda: not self.left_in_spool(), timeout, step=0.1)
        yield self.stop()
        for game_id in self.left_in_spool():
            subject = self.games.get(game_id)
            self.findings.append(
                Finding(
                    "left in spool",
                    f"<spool>/games/{game_id} is still there after a restart and SIGTERM",
                    subject,
                    game_id,
                    [*self.servers[-2].log.about(game_id), *self.servers[-1].log.about(game_id)][-16:],
                )
            )
        for game_id, folder in self.quarantined():
            self.stats["quarantined"] += 1
            self.quarantine.append((game_id, folder, self.games.get(game_id)))
            if isinstance(self.games.get(game_id), Honest):
                self._add("honest game quarantined", f"{folder}", self.games[game_id], game_id)

    def left_in_spool(self) -> list[int]:
        games = self.spool / "games"
        if not games.is_dir():
            return []
        return sorted(int(p.name) for p in games.iterdir() if p.name.isdigit())

    def quarantined(self) -> list[tuple[int, str]]:
        folder = self.spool / "quarantine"
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            head = path.name.split("-", 1)[0]
            if head.isdigit():
                found.append((int(head), path.name))
        return found

    # -- a batch ------------------------------------------------------------------------------

    @inlineCallbacks
    def run_batch(self, batch: Batch, kill_at: float | None = None):
        """Run ``batch`` and check it; with ``kill_at``, SIGKILL the server
        that many seconds into the batch (then :meth:`restart_and_check`)."""
        server = self.server
        assert server is not None
        start_line = server.log.count
        self._connected = []
        self.killing = kill_at is not None
        if kill_at is not None:
            reactor.callLater(kill_at, server.kill)
        work = [self._honest(honest) for honest in batch.honest] + [self._case(case) for case in batch.cases]
        results = yield DeferredList(work, consumeErrors=True)
        for ok, result in results:
            if not ok:
                self._add("harness error", result.getTraceback())
        if self.killing:
            yield server.twistd.exited
            for connected in self._connected:
                connected.client.close()
            self._collect_problems(server)
            saved = {int(path.stem) for path in self.vault.rglob("*.fafreplay")}
            self.relaxed |= set(self.games) - saved
            self.stats["batches"] += 1
            self.stats["kills"] += 1
            self.stats["connections"] += len(self._connected)
            self.server = None
            return
        # Every connection that sent 2 bytes or more has its line (assertion 4).
        named = [c for c in self._connected if c.client.sent >= 2 and c.client.port is not None]
        yield wait_for(
            lambda: not server.up or all(server.log.names(c.client.port, c.client.mark) for c in named),
            self.line_timeout,
        )
        if not server.up:
            self._add("crash", "the server exited during a batch", lines=[server.tail()])
        else:
            for connected in named:
                client = connected.client
                if not server.log.names(client.port, client.mark):
                    self._add(
                        "no logged outcome",
                        f"a connection from 127.0.0.1:{client.port} sent {client.sent} bytes "
                        f"({code(connected.connection or 'honest')}); no line names it",
                        connected.subject,
                        connected.game_id,
                    )
            for connected in self._connected:
                client = connected.client
                lobby = client.data[: client.sent] in (b"", b"P", b"G")  # what FA could have sent
                logged = server.log.names_without_a_game(client.port, client.mark)
                if lobby and client.closed_by_us and logged:
                    self._add(
                        "lobby leaver logged",
                        f"a connection that sent {client.data[: client.sent]!r} and closed has a line",
                        connected.subject,
                        connected.game_id,
                        server.log.about(port=client.port),
                    )
        self._collect_problems(server)
        server.log.forget_ports_before(start_line)
        self.stats["batches"] += 1
        self.stats["connections"] += len(self._connected)

    def received(self, game_id: int) -> list[bytes]:
        """What the server received of each upload of a fuzzed game, from the
        line that ended it (an upload it refused has none)."""
        found = []
        for server, client, sent in self.upload_clients.get(game_id, []):
            received = server.log.upload_received(client.port, client.mark, game_id) if client.port else None
            if received is not None:
                found.append(sent[:received])
        return found

    def _client(self, subject, game_id, transport, data, connection=None, **kwargs) -> Client:
        server = self.server
        assert server is not None
        client = Client(data, mark=lambda: server.log.count, **kwargs)
        self._connected.append(_Connected(client, subject, game_id, connection))
        opening = parse_opening(data) if isinstance(subject, Case) else None
        if opening is not None and opening[0] == "P" and opening[1] == game_id:
            self.upload_clients.setdefault(game_id, []).append((server, client, opening[2]))
        self._all_connected.append(self._connected[-1])
        if transport == "ws":
            opened = connect_websocket(server.ws_port, client)
        else:
            opened = connect(server.port, client)
        opened.addTimeout(15, reactor)
        opened.addErrback(lambda failure: client.give_up(failure.getErrorMessage() or repr(failure.value)))
        return client

    @inlineCallbacks
    def _case(self, case: Case):
        game_id = self._next_fuzz
        self._next_fuzz += 1
        self.games[game_id] = case
        self.stats["cases"] += 1
        clients = []
        uploads = self.uploads.setdefault(game_id, [])
        for connection in case.connections:
            data = connection.data(game_id)
            opening = parse_opening(data)
            if opening is not None and opening[0] == "P" and opening[1] == game_id:
                uploads.append(opening[2][:MAX_UPLOAD_BYTES])  # the server keeps no more
            clients.append(self._later(connection.delay, case, game_id, connection, data))
        yield DeferredList(clients)

    @inlineCallbacks
    def _later(self, delay, case, game_id, connection, data):
        if delay:
            yield sleep(delay)
        client = self._client(
            case,
            game_id,
            connection.transport,
            data,
            connection,
            pieces=connection.pieces,
            pause=connection.pause,
            then=connection.then,
        )
        yield client.closed
        if client.failed and not self.killing:
            self._add("cannot connect", f"{connection.transport}: {client.failed}", case, game_id)

    @inlineCallbacks
    def _honest(self, honest: Honest):
        server = self.server
        assert server is not None
        game_id = self._next_honest
        self._next_honest += 1
        self.games[game_id] = honest
        self.uploads[game_id] = [stream[:MAX_UPLOAD_BYTES] for stream in honest.streams()]
        self.stats["honest games"] += 1
        uploaders = [
            self._client(
                honest,
                game_id,
                plan.transport,
                f"P/{game_id}/player{i}.SCFAreplay\0".encode() + stream,
                pieces=plan.pieces,
                pause=plan.pause,
                then="hold",
            )
            for i, (plan, stream) in enumerate(honest.uploads())
        ]
        try:
            if not (yield wait_for(lambda: game_id in server.log.started or not server.up, 15)):
                self._add(
                    "honest game lost",
                    "no 'replay started' line within 15 s",
                    honest,
                    game_id,
                    server.log.about(game_id),
                )
                return
            watchers = [
                self._client(honest, game_id, transport, f"G/{game_id}/watcher{i}\0".encode(), then="hold")
                for i, transport in enumerate(honest.watchers)
            ]
            # The game cannot end before its watchers have the header: the
            # uploaders hold their connections until then.
            if not (yield wait_for(lambda: all(w.first_data.called for w in watchers) or not server.up, 15)):
                raise TimeoutError("the watchers got no replay header within 15 s")
            if honest.intruder is not None:
                intruder = honest.intruder
                client = self._client(
                    honest,
                    game_id,
                    intruder.transport,
                    intruder.data(game_id),
                    intruder,
                    pieces=intruder.pieces,
                    pause=intruder.pause,
                    then="close",
                )
                yield client.closed
            if not (yield wait_for(lambda: all(u.sent_all.called for u in uploaders) or not server.up, 30)):
                raise TimeoutError("the uploaders could not send everything within 30 s")
        except Exception as error:
            if server.up:
                self._add("honest game lost", f"stuck: {error!r}", honest, game_id, server.log.about(game_id))
            return
        finally:
            for uploader in uploaders:
                uploader.close()
        if not (yield wait_for(lambda: all(w.closed.called for w in watchers) or not server.up, 30)):
            self._add(
                "watcher not closed",
                "a watcher was still open 30 s after the uploads ended",
                honest,
                game_id,
                server.log.about(game_id),
            )
            for watcher in watchers:
                watcher.close()
        path = vault_path(self.vault, game_id)
        if not (yield wait_for(lambda: path.exists() or not server.up, 15)) or not path.exists():
            if not server.up:
                return  # a crash (run_batch says so), or the SIGKILL
            self._add(
                "honest game lost",
                "not in the vault 15 s after its uploads ended",
                honest,
                game_id,
                server.log.about(game_id),
            )
            return
        saved = fafreplay.extract_scfa(io.BytesIO(path.read_bytes()))
        if not honest.accepts(saved):
            self._add(
                "honest game wrong",
                f"saved {len(saved)} bytes, not the recording",
                honest,
                game_id,
                server.log.about(game_id),
            )
        for watcher in watchers:
            if bytes(watcher.received) != saved:
                self._add(
                    "watcher got other bytes",
                    f"a watcher from 127.0.0.1:{watcher.port} got {len(watcher.received)} bytes, "
                    f"the saved replay has {len(saved)}",
                    honest,
                    game_id,
                    server.log.about(game_id, watcher.port),
                )
        self.stats["honest games verified"] += 1
        self.verified.add(game_id)

    # -- checks ---------------------------------------------------------------------------------

    def _add(self, kind, detail, subject=None, game_id=None, lines=None) -> None:
        self.findings.append(Finding(kind, detail, subject, game_id, list(lines or [])))

    def _collect_problems(self, server: Server) -> None:
        """Critical lines and tracebacks since the last look (assertion 3)."""
        problems = server.log.problems
        for problem in problems[server.problems_seen :]:
            game_id = problem.game_id
            subject = self.games.get(game_id) if game_id is not None else None
            if subject is None and problem.port is not None:
                for connected in self._connected:
                    if connected.client.port == problem.port:
                        subject, game_id = connected.subject, connected.game_id
            self._add(problem.what, problem.text.splitlines()[0][:300], subject, game_id, [problem.text])
        server.problems_seen = len(problems)

    def check_vault(self) -> None:
        """Every saved file reads back, and the fuzzed games' files are what
        their uploads allow (assertion 2): the one stream all of a game's
        uploads sent, byte for byte (nothing when its header is not one the
        server takes); else one upload's header with a prefix of one upload's
        body, never a splice."""
        saved: dict[int, bytes] = {}
        for path in sorted(self.vault.rglob("*.fafreplay")):
            self.stats["saved files"] += 1
            game_id = int(path.stem)
            try:
                data = path.read_bytes()
                metadata = json.loads(data.split(b"\n", 1)[0])
                saved[game_id] = fafreplay.extract_scfa(io.BytesIO(data))
            except Exception as error:
                self._add("unreadable replay", f"{path}: {error!r}", self.games.get(game_id), game_id)
                continue
            if metadata.get("uid") != game_id or path != vault_path(self.vault, game_id):
                uid = metadata.get("uid")
                self._add("wrong metadata", f"{path}: uid {uid}", self.games.get(game_id), game_id)
        quarantined = {game_id for game_id, _ in self.quarantined()}
        for game_id, uploads in self.uploads.items():
            replay = saved.get(game_id)
            if not uploads or game_id in quarantined or game_id in self.verified:
                continue
            if game_id not in self.relaxed and isinstance(self.games.get(game_id), Honest):
                continue  # its finding is made already
            if len(set(uploads)) == 1 and game_id not in self.relaxed:
                expected = uploads[0] if accepted_header_end(uploads[0]) is not None else None
                if replay != expected:
                    told = "nothing" if replay is None else f"{len(replay)} bytes"
                    wanted = "nothing" if expected is None else f"the {len(expected)} bytes all uploads sent"
                    self._add(
                        "fuzzed game saved wrong",
                        f"saved {told}, not {wanted}",
                        self.games[game_id],
                        game_id,
                        self.about(game_id),
                    )
                continue
            if game_id not in self.relaxed:
                stalled = any(game_id in server.log.stalled for server in self.servers)
                problem = saved_problem(replay, self.received(game_id), self.quorum, stalled)
                self.stats["differing games judged" + (" (a voter stalled)" if stalled else "")] += 1
                if problem is not None:
                    subject = self.games[game_id]
                    self._add("fuzzed game saved wrong", problem, subject, game_id, self.about(game_id))
                continue
            if replay is None:
                continue
            headers = {s[: header_end(s)] for s in uploads if header_end(s) is not None}
            bodies = [body(s) for s in uploads]
            end = header_end(replay)
            if (
                end is None
                or replay[:end] not in headers
                or not any(b.startswith(replay[end:]) for b in bodies)
            ):
                self._add(
                    "not one of the uploads",
                    f"saved {len(replay)} bytes (header {end}) are no upload's header with a prefix of "
                    "an upload's body",
                    self.games.get(game_id),
                    game_id,
                    self.about(game_id),
                )

    def about(self, game_id: int) -> list[str]:
        """What every server logged about a game, and what its clients saw."""
        lines = [line for server in self.servers for line in server.log.about(game_id, limit=40)]
        return lines + [c.client.describe() for c in self._all_connected if c.game_id == game_id]

    def summary(self) -> str:
        stats = ", ".join(f"{value} {name}" for name, value in sorted(self.stats.items()))
        levels: Counter[str] = Counter()
        for server in self.servers:
            levels.update(server.log.levels)
        quarantined = "".join(
            f"\n      quarantined: {folder}: {code(subject)}" for _, folder, subject in self.quarantine
        )
        stall = max((server.log.longest_stall for server in self.servers), default=0.0)
        return (
            f"{stats}; log lines by level: {dict(levels)}; longest reactor stall: server {stall:.0f} ms, "
            f"clients {self.harness_lag * 1000:.0f} ms{quarantined}"
        )


@inlineCallbacks
def fuzz(
    owner: Any,
    directory: Path,
    batch_list: list[Batch],
    restart: bool = True,
    options: tuple[str, ...] = OPTIONS,
):
    """One server for ``batch_list``, SIGTERM, then (``restart``) the restart
    check and the vault check; the run with its findings."""
    run = FuzzRun(owner, directory, options)
    yield run.start()
    for batch in batch_list:
        if not run.server.up:
            break
        yield run.run_batch(batch)
    yield run.stop()
    if restart:
        yield run.restart_and_check()
    run.check_vault()
    return run


def report(run: FuzzRun) -> str:
    """Every finding with its log, then one line for each (last, so a log
    that keeps only a run's beginning and end still names them)."""
    details = "\n\n".join(finding.report() for finding in run.findings)
    summary = "\n".join(f"finding: [{f.kind}] game {f.game_id}: {f.detail[:300]}" for f in run.findings)
    return f"{details}\n\n{summary}"


# -- the tests ----------------------------------------------------------------------------------------

"""The fuzz suite's server and clients: a real ``twistd faf-replay`` with a JSON
log read as it arrives (:class:`Server`, :class:`ServerLog`), and the clients
that play the fuzzed and honest connections (:class:`Client`).
``tests/support/fuzzing.py`` runs batches of cases against them; ``tests/system/test_fuzz.py``
has the tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter, deque
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import eventFromJSON, formatEvent

from faf_replay.accept.header import ConnectionHeaderError, ConnectionHeaderParser
from tests.support.clients import WebSocketClient
from tests.support.processes import run_twistd

#: The seed of the CI run (``FAF_REPLAY_FUZZ_SEED`` overrides it).
SEED = int(os.environ.get("FAF_REPLAY_FUZZ_SEED", "20261202"))

#: Bytes one upload may send: more than any recording, less than some mutated ones.
MAX_UPLOAD_BYTES = 45000
#: The server's options beside port, vault and spool: fast timers, short timeouts.
OPTIONS = (
    "--log-format=json",
    "--grace=0.3",
    "--delay=0.2",
    "--sample-interval=0.05",
    "--linger=0.1",
    "--header-timeout=1",
    "--replay-header-timeout=2",
    "--stall-timeout=1",
    "--silent-upload-timeout=1",
    "--spool-sync=0.5",
    f"--max-upload-bytes={MAX_UPLOAD_BYTES}",
)
#: Seconds a connection that waits (``then="wait"``) stays after its last byte.
WAIT_LIMIT = 2.5
#: Pieces sent as drawn (with their pause); the rest goes in 4 KiB pieces at once.
PACED_PIECES = 100


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def wait_for(condition, timeout: float, step: float = 0.02):
    """Wait until ``condition()``; True if it came within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        yield sleep(step)
    return True


def code(value: Any) -> str:
    """``value`` as the Python that rebuilds it, leaving out default fields."""
    if is_dataclass(value) and not isinstance(value, type):
        parts = []
        for item in fields(value):
            current = getattr(value, item.name)
            if item.default is not MISSING and current == item.default:
                continue
            parts.append(f"{item.name}={code(current)}")
        return f"{type(value).__name__}({', '.join(parts)})"
    if isinstance(value, tuple):
        inner = ", ".join(code(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, bytes) and len(value) > 48 and len(set(value)) == 1:
        return f"{value[:1]!r} * {len(value)}"
    return repr(value)


def parse_opening(data: bytes) -> tuple[str, int, bytes] | None:
    """``(kind, game id, what followed)`` when ``data`` opens with a valid
    connection header (docs/protocol.md), else None."""
    parser = ConnectionHeaderParser()
    try:
        parsed = parser.feed(data)
    except ConnectionHeaderError:
        return None
    if parsed is None:
        return None
    header, rest = parsed
    return ("P" if header.kind.value == "upload" else "G"), header.game_id, rest


# -- clients --------------------------------------------------------------------------------------


def connect_websocket(port: int, protocol: Protocol) -> Deferred:
    """``tests.support.clients.connect_websocket`` with a long close handshake.

    autobahn's timeouts go through txaio's batched timer, which floors each
    deadline to a whole second: the client's default 1 s close handshake
    timeout fires anywhere from at once to 1 s after ``sendClose`` and then
    aborts the connection, dropping what the client's transport had not
    written yet (its last messages). 30 s is never less than 29."""
    opened: Deferred = Deferred()
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/")
    factory.protocol = lambda: WebSocketClient(protocol, opened)  # type: ignore[assignment]
    factory.setProtocolOptions(openHandshakeTimeout=10, closeHandshakeTimeout=30)
    connectWS(factory)
    return opened


def local_port(transport: Any) -> int | None:
    websocket = getattr(transport, "_websocket", None)  # tests.support.clients' WebSocket transport
    if websocket is not None:
        transport = websocket.transport
    with contextlib.suppress(Exception):
        return transport.getHost().port
    return None


class Client(Protocol):
    """Sends ``data`` in ``pieces`` (cycled), one per ``pause``; the first
    :data:`PACED_PIECES` as drawn, the rest in 4 KiB pieces at once. Then
    ``then``: "close", "wait" (for the server to close; closed by us after
    ``wait_limit``) or "hold" (until :meth:`close`). Keeps what it receives."""

    def __init__(
        self,
        data: bytes,
        *,
        pieces: tuple[int, ...] = (4096,),
        pause: float = 0.0,
        then: str = "close",
        wait_limit: float = WAIT_LIMIT,
        mark: Any = None,
    ) -> None:
        self.data = data
        self.pieces = pieces
        self.pause = pause
        self.then = then
        self.wait_limit = wait_limit
        self._mark = mark
        self.mark = 0  # the server log's length when we connected
        self.port: int | None = None
        self.sent = 0
        #: Bytes a WebSocket client dropped because its socket was closing (as TCP would).
        self.unsent = 0
        self.received = bytearray()
        self.first_data: Deferred = Deferred()
        self.sent_all: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self.closed_by_us = False
        self._closed_at: float | None = None
        self.unsent_at_abort: int | None = None
        self.abort_after: float | None = None
        self.failed: str | None = None  # could not connect
        self._index = 0
        self._call: Any = None
        self._lost = False

    def connectionMade(self) -> None:
        self.port = local_port(self.transport)
        self.mark = self._mark() if self._mark is not None else 0
        websocket = getattr(self.transport, "_websocket", None)
        if websocket is not None:  # what a timed-out close leaves unsent (for a report)
            timed_out = websocket.onCloseHandshakeTimeout

            def on_timeout() -> None:
                tcp = websocket.transport
                buffered = len(getattr(tcp, "dataBuffer", b"")) - getattr(tcp, "offset", 0)
                self.unsent_at_abort = buffered + getattr(tcp, "_tempDataLen", 0)
                self.abort_after = time.monotonic() - (self._closed_at or 0)
                timed_out()

            websocket.onCloseHandshakeTimeout = on_timeout
        self._next()

    def _next(self) -> None:
        self._call = None
        if self._lost or self.closed_by_us:
            return
        if self.sent >= len(self.data):
            if not self.sent_all.called:
                self.sent_all.callback(self)
            if self.then == "close":
                self.close()
            elif self.then == "wait":
                self._call = reactor.callLater(self.wait_limit, self.close)
            return
        paced = self._index < PACED_PIECES
        size = self.pieces[self._index % len(self.pieces)] if paced else 4096
        self._index += 1
        piece = self.data[self.sent : self.sent + size]
        self.sent += len(piece)
        websocket = getattr(self.transport, "_websocket", None)
        if websocket is not None and websocket.state != websocket.STATE_OPEN:
            self.unsent += len(piece)
        self.transport.write(piece)
        self._call = reactor.callLater(self.pause if paced else 0, self._next)

    def close(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if not self._lost and not self.closed_by_us and self.transport is not None:
            self.closed_by_us = True
            self._closed_at = time.monotonic()
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.first_data.called:
            self.first_data.callback(self)

    def connectionLost(self, reason: Any = None) -> None:
        self._lost = True
        websocket = getattr(self.transport, "_websocket", None)
        if websocket is not None and websocket.closeHandshakeTimeoutCall is not None:
            websocket.closeHandshakeTimeoutCall.cancel()  # autobahn leaves it once the TCP is gone
            websocket.closeHandshakeTimeoutCall = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if not self.closed.called:
            self.closed.callback(self)

    def describe(self) -> str:
        websocket = getattr(self.transport, "_websocket", None)
        over = "tcp"
        if websocket is not None:
            how = "; ".join(
                f"{name} {getattr(websocket, name, None)!r}"
                for name in (
                    "wasNotCleanReason",
                    "droppedByMe",
                    "wasCloseHandshakeTimeout",
                    "remoteCloseCode",
                )
            )
            over = f"ws (close code {websocket.close_code}; {how})"
        return (
            f"client 127.0.0.1:{self.port} over {over}: sent {self.sent} of {len(self.data)} bytes"
            f"{f' ({self.unsent} dropped: the socket was closing)' if self.unsent else ''}, received "
            f"{len(self.received)}, closed by {'us' if self.closed_by_us else 'the server'}"
            f"{f', never connected: {self.failed}' if self.failed else ''}"
            + (
                f"; its close timed out {self.abort_after:.2f} s after it began, "
                f"{self.unsent_at_abort} bytes still in its own send buffer"
                if self.unsent_at_abort is not None
                else ""
            )
        )

    def give_up(self, why: str) -> None:
        """It never connected."""
        self.failed = why
        self._lost = True
        for waiting in (self.sent_all, self.closed):
            if not waiting.called:
                waiting.callback(self)


# -- the server and its log ---------------------------------------------------------------------

_PEER = re.compile(r"127\.0\.0\.1:(\d+)\b")
_PROBLEM_TEXT = ("Traceback", "Unhandled")


@dataclass
class Problem:
    """A line the log must not have (assertion 3)."""

    what: str  # "critical", "traceback", "foreign traceback"
    text: str
    game_id: int | None = None
    port: int | None = None


class ServerLog:
    """The server's JSON log, parsed as it arrives; only what the checks need
    is kept (the long run logs millions of lines)."""

    def __init__(self, keep: int = 20000) -> None:
        self._partial = b""
        self.count = 0
        #: Line numbers of the lines naming each client port.
        self.ports: dict[int, list[int]] = {}
        #: Line numbers of the lines naming a client port and no game (a connection's own).
        self.gameless_ports: dict[int, list[int]] = {}
        self.started: set[int] = set()
        self.problems: list[Problem] = []
        self.recent: deque[str] = deque(maxlen=keep)
        self.by_game: dict[int, deque[str]] = {}
        self.levels: Counter[str] = Counter()
        self.listening: dict[str, int] = {}
        #: The longest reactor stall the server logged, in ms.
        self.longest_stall = 0.0
        self.stderr: list[str] = []
        self._stderr_partial = b""
        #: Namespaces whose lines are read as if the server had not logged them.
        self.ignore: set[str] = set()
        #: What each upload had sent when it ended, by client port: (line number, bytes).
        self.uploaded: dict[int, list[tuple[int, int, int | None]]] = {}
        #: Games whose merge stopped waiting for a stalled upload.
        self.stalled: set[int] = set()

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self._line(line.decode("utf-8", "replace"))

    def feed_stderr(self, data: bytes) -> None:
        lines = (self._stderr_partial + data).split(b"\n")
        self._stderr_partial = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if not line.strip():
                continue
            self.stderr.append(line[:500])
            del self.stderr[:-200]
            if any(word in line for word in _PROBLEM_TEXT):
                self.problems.append(Problem("foreign traceback", "stderr: " + line))

    def _line(self, line: str) -> None:
        self.count += 1
        try:
            event = eventFromJSON(line)
            level = event.get("log_level")
            level_name = getattr(level, "name", str(level))
            text = formatEvent(event)
        except Exception:
            event, level_name, text = {}, "text", line
        namespace = event.get("log_namespace", "")
        if namespace in self.ignore:
            return
        self.levels[level_name] += 1
        shown = f"{level_name} [{namespace}] {text}"
        self.recent.append(shown)
        game_id = event.get("game_id")
        if not isinstance(game_id, int):
            game_id = None
        if game_id is not None:
            self.by_game.setdefault(game_id, deque(maxlen=40)).append(shown)
            if text.startswith(f"game {game_id}: replay started"):
                self.started.add(game_id)
        stall = event.get("lag_ms")
        if isinstance(stall, (int, float)):
            self.longest_stall = max(self.longest_stall, float(stall))
        found = re.match(r"(\w+) starting on (\d+)$", text)
        if found:
            self.listening[found.group(1)] = int(found.group(2))
        ports = [int(port) for port in _PEER.findall(text)]
        for port in ports:
            self.ports.setdefault(port, []).append(self.count)
            if game_id is None:
                self.gameless_ports.setdefault(port, []).append(self.count)
        received = event.get("received")
        if isinstance(received, int) and "outcome" in event and ports:  # an upload's last line
            self.uploaded.setdefault(ports[0], []).append((self.count, received, game_id))
        if game_id is not None and "held the replay back" in text:
            self.stalled.add(game_id)
        failure = event.get("log_failure")
        port = ports[0] if ports else None
        if failure is not None:
            with contextlib.suppress(Exception):
                shown += "\n" + failure.getTraceback()
            self.problems.append(Problem("traceback", shown, game_id, port))
        elif level_name == "critical":
            self.problems.append(Problem("critical", shown, game_id, port))
        elif any(word in line for word in _PROBLEM_TEXT):
            self.problems.append(Problem("traceback", shown, game_id, port))

    def upload_received(self, port: int, since: int, game_id: int) -> int | None:
        """Bytes the upload of ``game_id`` from ``port`` had sent when it ended, by
        the first such line since line ``since``; None when it has none (it was
        refused). The game counts: two clients may share a local port at once,
        one connected to the TCP port and one to the WebSocket port."""
        ends = self.uploaded.get(port, ())
        return next((received for line, received, game in ends if line > since and game == game_id), None)

    def names_without_a_game(self, port: int | None, since: int) -> bool:
        """Like :meth:`names`, by a line about no game: a connection refused or
        cut before its header (a line about a game is another client's, whose
        port this one reuses)."""
        return port is not None and any(number > since for number in self.gameless_ports.get(port, ()))

    def names(self, port: int | None, since: int) -> bool:
        """Whether a line since line ``since`` names the client at ``port``."""
        return port is not None and any(number > since for number in self.ports.get(port, ()))

    def forget_ports_before(self, line: int) -> None:
        for lines in (self.ports, self.gameless_ports):
            for port in list(lines):
                kept = [number for number in lines[port] if number > line]
                if kept:
                    lines[port] = kept
                else:
                    del lines[port]

    def about(self, game_id: int | None = None, port: int | None = None, limit: int = 12) -> list[str]:
        """Lines about a game or a client, for a report."""
        found = list(self.by_game.get(game_id, ())) if game_id is not None else []
        if port is not None:
            found += [line for line in self.recent if f"127.0.0.1:{port}" in line and line not in found]
        return found[-limit:]


class Server:
    """One ``twistd faf-replay`` on ``vault`` and ``spool``, its log parsed."""

    def __init__(self, owner: Any, cwd: Path, vault: Path, spool: Path, options: tuple[str, ...] = OPTIONS):
        self.owner, self.cwd, self.vault, self.spool, self.options = owner, cwd, vault, spool, options
        self.log = ServerLog()
        self.twistd: Any = None
        self.port = self.ws_port = 0
        #: Problems of its log already turned into findings.
        self.problems_seen = 0

    @inlineCallbacks
    def start(self):
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.twistd = process = run_twistd(
            self.owner,
            str(self.cwd),
            "--port=tcp:0:interface=127.0.0.1",
            "--ws-port=tcp:0:interface=127.0.0.1",
            f"--vault={self.vault}",
            f"--spool={self.spool}",
            *self.options,
            env={"RUST_BACKTRACE": "0"},
        )
        original = process.outReceived

        def out(data: bytes) -> None:
            if "WebSocketReplayFactory" not in self.log.listening:
                original(data)  # Twistd finds the port in what it keeps; then it keeps nothing more
            self.log.feed(data)

        process.outReceived = out
        process.errReceived = self.log.feed_stderr
        self.port = yield process.listening()
        yield wait_for(lambda: "WebSocketReplayFactory" in self.log.listening or process.exited.called, 30)
        if process.exited.called:
            raise RuntimeError(f"twistd exited at start: {self.tail()}")
        self.ws_port = self.log.listening["WebSocketReplayFactory"]

    @property
    def up(self) -> bool:
        return self.twistd is not None and not self.twistd.exited.called

    @inlineCallbacks
    def stop(self, timeout: float = 60):
        """SIGTERM; the exit code (None: still running after ``timeout`` s, then killed)."""
        if not self.up:
            code_ = yield self.twistd.exited
            return code_
        self.twistd.process.signalProcess("TERM")
        exited = yield wait_for(lambda: self.twistd.exited.called, timeout)
        if not exited:
            with contextlib.suppress(Exception):
                self.twistd.process.signalProcess("KILL")
            yield self.twistd.exited
            return None
        code_ = yield self.twistd.exited
        return code_

    def kill(self) -> None:
        if self.up:
            self.twistd.process.signalProcess("KILL")

    def tail(self, count: int = 15) -> str:
        return "\n".join([*list(self.log.recent)[-count:], *self.log.stderr[-count:]])


# -- findings ---------------------------------------------------------------------------------------

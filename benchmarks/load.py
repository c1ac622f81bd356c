"""The load benchmark: real games against a real ``twistd faf-replay``.

    .venv/bin/python -m benchmarks.load cost [--mariadb]    # 400 games x (4 up + 2 watch) of 300 KB at 5 KB/s
    .venv/bin/python -m benchmarks.load capacity --games 2400 --ramp 30 [--plot out.png]
    .venv/bin/python -m benchmarks.load capacity --games 1450 --uploaders 8 --acceleration 1 --ramp 45
    .venv/bin/python -m benchmarks.load idle --connections 10000
    .venv/bin/python -m benchmarks.load watchers [--watchers 200 --size 5600000 --zstd-level 19]
    .venv/bin/python -m benchmarks.load cost --server floor          # or floor-every-write, or anchor
    .venv/bin/python -m benchmarks.load cost --compare --anchor-path /work/anchors/aio

docs/benchmarks.md has the figures measured with these commands, and the machine.

``--server`` loads another server with the same games: the floor
(``benchmarks/floor.py``, what any server must spend on these sockets) or the
asyncio anchor (``benchmarks/anchor.py``). ``--compare`` runs them in turn in
one invocation and ends with a table of ratios (``benchmarks/compare.py``).

Starts the server (this checkout) as a subprocess on free ports, and drives it
over real TCP from several load-generator processes, each a plain
``selectors`` loop over many non-blocking sockets (cheap enough to share the
machine with the server). Uploads are real recordings from ``tests/data``
(the body repeated to the length asked), written ten times a second at a fixed
byte rate or paced by the replay's own ticks; some uploaders diverge or leave
early; some watchers join late. Every saved file is read back with
``fafreplay.extract_scfa`` and every watcher's bytes are checked. Prints a
readable table and, last, one line of JSON. Figures: server CPU (user+sys from
``/proc``) per phase, peak and steady resident memory, memory per connection,
bytes in and out, connections held, replays saved and verified, time from a
game's last upload to its saved file (median, p99), the longest reactor stall
(the server's own probe), and the generators' CPU.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import os
import re
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.process import Process

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


# -- streams -------------------------------------------------------------------------


def split(stream: bytes) -> tuple[bytes, bytes]:
    import fafreplay  # noqa: PLC0415 - the generators do not need it

    offset = fafreplay.body_offset(stream)
    return stream[:offset], stream[offset:]


def commands(data: bytes, start: int = 0):
    """(offset, type, size) of each command of a replay body from ``start``;
    stops at the end or at a size that cannot be one."""
    position = start
    while position + 3 <= len(data):
        size = int.from_bytes(data[position + 1 : position + 3], "little")
        if size < 3:
            return
        yield position, data[position], size
        position += size


def make_stream(name: str, size: int, vary: bool = False) -> bytes:
    """A real recording's header and its body repeated to about ``size`` bytes.

    With ``vary``, every repetition after the first has about one payload byte
    in eight replaced (command types, sizes and tick counts kept, so the body
    still parses): a long game that compresses about as well as a real one
    (7:1 at level 10) rather than like one recording over and over (900:1).
    """
    header, body = split((DATA / f"{name}.scfareplay").read_bytes())
    repeats = max(1, -(-(size - len(header)) // len(body)))
    if not vary:
        return header + body * repeats
    import random  # noqa: PLC0415

    payload = []  # positions of the body's payload bytes (not a command's type or size, not ticks)
    for position, kind, length in commands(body):
        if kind != 0:
            payload.extend(range(position + 3, min(position + length, len(body))))
    rng = random.Random(size)
    parts = [body]
    for _ in range(repeats - 1):
        copy = bytearray(body)
        for at in rng.sample(payload, len(payload) // 8):
            copy[at] = rng.randrange(256)
        parts.append(bytes(copy))
    return header + b"".join(parts)


def stream_key(game: dict) -> tuple[str, int, bool]:
    """The arguments of ``make_stream`` that give a planned game's stream."""
    return game["recording"], game["size"], game.get("vary", False)


def tick_times(stream: bytes, acceleration: float) -> list[tuple[float, int]]:
    """(seconds from the start, end offset) at every Advance command of the body."""
    header, _ = split(stream)
    times, ticks = [], 0
    for position, kind, size in commands(stream, len(header)):
        if kind == 0:
            ticks += int.from_bytes(stream[position + 3 : position + 7], "little")
            times.append((ticks * 0.1 / acceleration, position + size))
    times.append((ticks * 0.1 / acceleration, len(stream)))
    return times


# -- the load generator (one process drives many sockets) ---------------------------------


@dataclass
class Upload:
    game: int
    sock: socket.socket
    data: bytes
    end: int  # where this uploader stops (early leavers stop before the end)
    sent: int = 0
    wire: bytes = b""
    closed_at: float | None = None


@dataclass
class Watch:
    game: int
    sock: socket.socket
    join_at: float
    digest: object = field(default_factory=hashlib.sha256)
    received: int = 0
    done: bool = False
    connected: bool = False
    #: When its ``G/…\0`` went out, and when the first byte came back (the
    #: replay header, which is not delayed).
    asked_at: float | None = None
    first_at: float | None = None
    #: Byte offsets of the stream whose arrival is timed, and when each came.
    marks: tuple[int, ...] = ()
    marked_at: list[float] = field(default_factory=list)

    def arrived(self, now: float) -> None:
        """Bytes came (``received`` counts them): note the first, and the marks passed."""
        if self.first_at is None:
            self.first_at = now
        while len(self.marked_at) < len(self.marks) and self.received > self.marks[len(self.marked_at)]:
            self.marked_at.append(now)


#: Where in a stream a watcher's arrival times are taken (fractions of it).
WATCH_MARKS = (0.25, 0.5, 0.75)


def generator(spec: dict) -> dict:
    """Run one generator's share of the games; returns what it saw."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    address = (spec["host"], spec["port"])
    streams: dict[tuple, bytes] = {}
    selector = selectors.DefaultSelector()
    uploads: list[Upload] = []
    watches: list[Watch] = []
    start = spec["start_at"]
    interval = spec["interval"]
    for game in spec["games"]:
        key = stream_key(game)
        if key not in streams:
            streams[key] = make_stream(*key)
        stream = streams[key]
        for plan in game["uploaders"]:
            data = stream
            if plan.get("diverge_at") is not None:
                at = int(len(stream) * plan["diverge_at"])
                data = stream[:at] + bytes(b ^ 0x55 for b in stream[at : at + 64]) + stream[at + 64 :]
            end = int(len(data) * plan.get("leave_at", 1.0))
            sock = _connect(address)
            sock.send(f"P/{game['id']}/{plan['name']}.SCFAreplay\0".encode())
            uploads.append(Upload(game["id"], sock, data, end))
        marks = tuple(int(len(stream) * fraction) for fraction in WATCH_MARKS)
        for delay in game["watchers"]:
            watches.append(Watch(game["id"], _socket(), start + delay, marks=marks))
    pacing = None
    if spec["acceleration"] is not None:
        ticks = tick_times(next(iter(streams.values())), spec["acceleration"])
        pacing = ([at for at, _ in ticks], [offset for _, offset in ticks])
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    while time.time() < start:
        time.sleep(0.01)
    pending_watches = sorted(watches, key=lambda w: w.join_at)
    open_uploads = list(uploads)
    next_tick = start
    deadline = start + spec["timeout"]
    while (open_uploads or not all(w.done for w in watches)) and time.time() < deadline:
        now = time.time()
        while pending_watches and pending_watches[0].join_at <= now:
            watch = pending_watches.pop(0)
            try:
                watch.sock.connect(address)
                watch.sock.setblocking(False)
                watch.sock.send(f"G/{watch.game}/bench\0".encode())
                watch.asked_at = time.time()
                watch.connected = True
                selector.register(watch.sock, selectors.EVENT_READ, watch)
            except OSError:
                watch.done = True
        if now >= next_tick:
            elapsed = now - start
            for upload in list(open_uploads):
                target = _target(upload, elapsed, spec["rate"], pacing)
                if target > upload.sent or upload.wire:
                    upload.wire += upload.data[upload.sent : target]
                    upload.sent = max(upload.sent, target)
                    try:
                        upload.wire = upload.wire[upload.sock.send(upload.wire) :] if upload.wire else b""
                    except BlockingIOError:
                        pass
                    except OSError:
                        upload.wire, upload.sent = b"", upload.end
                if upload.sent >= upload.end and not upload.wire:
                    upload.sock.close()
                    upload.closed_at = time.time()
                    open_uploads.remove(upload)
            next_tick += interval
        timeout = max(
            0.0, min(next_tick, pending_watches[0].join_at if pending_watches else next_tick) - time.time()
        )
        for key, _ in selector.select(timeout):
            watch = key.data
            while True:
                try:
                    chunk = watch.sock.recv(262144)
                except BlockingIOError:
                    break
                except OSError:
                    chunk = b""
                if not chunk:
                    watch.done = True
                    selector.unregister(watch.sock)
                    watch.sock.close()
                    break
                watch.digest.update(chunk)
                watch.received += len(chunk)
                watch.arrived(time.time())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu": usage.ru_utime - usage_before.ru_utime + usage.ru_stime - usage_before.ru_stime,
        "uploads": [
            {"game": u.game, "sent": u.sent, "end": u.end, "closed_at": u.closed_at} for u in uploads
        ],
        "watches": [
            {
                "game": w.game,
                "received": w.received,
                "sha256": w.digest.hexdigest(),
                "done": w.done,
                "join_at": w.join_at,
                "asked_at": w.asked_at,
                "first_at": w.first_at,
                "marks": list(w.marks),
                "marked_at": w.marked_at,
            }
            for w in watches
        ],
    }


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    return sock


def _connect(address) -> socket.socket:
    sock = _socket()
    sock.connect(address)
    sock.setblocking(False)
    return sock


def _target(upload: Upload, elapsed: float, rate: float | None, pacing) -> int:
    if pacing is None:
        return min(upload.end, int(elapsed * rate))
    times, offsets = pacing
    reached = bisect.bisect_right(times, elapsed)  # Advance ticks due by now
    return min(upload.end, offsets[reached - 1] if reached else 0)


# -- the server -----------------------------------------------------------------------------


class Server(Process):
    """faf-replay (this checkout, or ``checkout``) under ``twistd``, on free ports, logging JSON."""

    kind = "faf-replay"

    def __init__(self, workdir: Path, options: list[str], checkout: Path = ROOT) -> None:
        command = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "faf-replay",
            "--port=tcp:0:interface=127.0.0.1:backlog=4096",
            "--http-port=tcp:0:interface=127.0.0.1",
            "--log-format=json",
            "--max-connections-per-address=1000000",
            "--max-connections=1000000",
            *options,
        ]
        super().__init__(workdir, command, {**os.environ, "PYTHONPATH": str(checkout)})
        self.game_port, self.http_port = self._ports()

    def _ports(self) -> tuple[int, int]:
        for _ in range(600):
            found = re.findall(rb"(\w+) starting on (\d+)", self.log_path.read_bytes())
            ports = {name: int(port) for name, port in found}
            if b"ReplayFactory" in ports and b"Site" in ports:
                return ports[b"ReplayFactory"], ports[b"Site"]
            if self.process.poll() is not None:
                sys.exit(self.log_text()[-3000:])
            time.sleep(0.1)
        sys.exit("the server did not start")

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics").read().decode()
        found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def events(self) -> list[dict]:
        events = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


class Sampler:
    """The server's CPU seconds and memory, once a second, with phase marks."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.samples: list[tuple[float, float, int]] = []
        self.marks: dict[str, float] = {}

    def sample(self) -> None:
        rss, _ = self.server.memory()
        self.samples.append((time.time(), self.server.cpu(), rss))

    def mark(self, phase: str) -> None:
        self.sample()
        self.marks[phase] = time.time()

    def cpu_between(self, start: str, end: str) -> float:
        a, b = self.marks[start], self.marks[end]
        inside = [s for s in self.samples if a <= s[0] <= b]
        return inside[-1][1] - inside[0][1] if len(inside) >= 2 else 0.0


_WORKDIRS: list[Path] = []


def _workdir() -> Path:
    """A scratch directory for one server (vault, spool, log), removed at the end unless --keep."""
    path = Path(tempfile.mkdtemp(prefix="faf-replay-bench-"))
    _WORKDIRS.append(path)
    return path


# -- runs -----------------------------------------------------------------------------------


def run_generators(specs: list[dict], sampler: Sampler) -> list[dict]:
    outputs = [tempfile.TemporaryFile() for _ in specs]  # not pipes: a full pipe would block a generator
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.load", "generator"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=output,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for output in outputs
    ]
    for process, spec in zip(processes, specs, strict=True):
        process.stdin.write(json.dumps(spec).encode())
        process.stdin.close()
    while any(p.poll() is None for p in processes):
        sampler.sample()
        time.sleep(1)
    results = []
    for output in outputs:
        output.seek(0)
        results.append(json.loads(output.read()))
        output.close()
    return results


def plan_games(args, first_id: int = 1_000_000) -> list[dict]:
    games = []
    for n in range(args.games):
        uploaders = []
        for u in range(args.uploaders):
            plan: dict = {"name": f"u{u}"}
            if args.diverging and n % args.diverging == 0 and u == args.uploaders - 1 and args.uploaders >= 3:
                plan["diverge_at"] = 0.5  # one uploader of these games diverges halfway
            if args.early and n % args.early == 0 and u == 0:
                plan["leave_at"] = 0.6  # and one leaves early (a prefix)
            uploaders.append(plan)
        watchers = [0.5 if w == 0 else args.late_watchers_after for w in range(args.watchers)]
        games.append(
            {
                "id": first_id + n,
                "recording": args.recording,
                "size": args.size,
                "vary": args.vary,
                "uploaders": uploaders,
                "watchers": watchers,
            }
        )
    return games


def verify(server: Process, games: list[dict], results: list[dict], timeout: float) -> dict:
    """Every game's saved file is the full stream; every watcher got exactly it.

    A server that saves nothing (the floor) has only its watchers checked.
    """
    expected = {stream_key(game): make_stream(*stream_key(game)) for game in games}
    outcome = verify_watchers(games, results, expected)
    if not server.saves:
        return {"saved": None, "verified": None, **outcome}
    from faf_replay.save.vault import vault_path  # noqa: PLC0415

    vault = server.workdir / "replays"
    paths = {game["id"]: vault_path(vault, game["id"]) for game in games}
    pending = set(paths)
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        pending = {game_id for game_id in pending if not server.is_saved(paths[game_id])}
        if pending:
            time.sleep(0.5)
    saved = len(games) - len(pending)
    verified = sum(
        1
        for game in games
        if game["id"] not in pending and server.read_saved(paths[game["id"]]) == expected[stream_key(game)]
    )
    return {"saved": saved, "verified": verified, **outcome}


def verify_watchers(games: list[dict], results: list[dict], expected: dict[tuple, bytes]) -> dict:
    """Watchers that got as many bytes as the stream, and those that got exactly it."""
    digests = {key: hashlib.sha256(stream).hexdigest() for key, stream in expected.items()}
    by_id = {game["id"]: stream_key(game) for game in games}
    watches = [w for r in results for w in r["watches"]]
    complete = sum(1 for w in watches if w["done"] and w["received"] == len(expected[by_id[w["game"]]]))
    good = sum(1 for w in watches if w["done"] and w["sha256"] == digests[by_id[w["game"]]])
    return {"watchers": len(watches), "watchers_complete": complete, "watchers_verified": good}


def watcher_timing(results: list[dict], start_at: float, rate: float | None, delay: float) -> dict:
    """How watchers were served. The first byte: seconds from a watcher's
    ``G/…\0`` to the first byte back (the replay header, not delayed), for
    those that join a running game (``--late-watchers-after``; at the start a
    watcher may wait for the header itself). The delay's accuracy: for those
    that joined at the start, how far behind the uploads each timed byte came,
    less the delay (negative: earlier than the delay allows). Uploads send byte
    ``x`` at ``start_at + x / rate``, so that is when a byte was played."""
    watches = [w for r in results for w in r["watches"] if w["first_at"] and w["asked_at"]]
    late = [w for w in watches if w["join_at"] - start_at >= 5]
    early = [w for w in watches if w["join_at"] - start_at < 5]
    figures = {}
    first = sorted(w["first_at"] - w["asked_at"] for w in late)
    if first:
        figures["watcher_first_byte_median_s"] = round(statistics.median(first), 4)
        figures["watcher_first_byte_p99_s"] = round(percentile(first, 0.99), 4)
    late_by = (
        sorted(
            at - (start_at + mark / rate) - delay
            for w in early
            for mark, at in zip(w["marks"], w["marked_at"], strict=False)
        )
        if rate
        else []
    )
    if late_by:
        figures["watcher_behind_the_delay_median_s"] = round(statistics.median(late_by), 3)
        figures["watcher_behind_the_delay_p99_s"] = round(percentile(late_by, 0.99), 3)
        figures["watcher_behind_the_delay_min_s"] = round(late_by[0], 3)
    return figures


def row_latencies(results: list[dict], available_at: dict[int, float]) -> list[float]:
    """Per game: seconds from its last upload closing (the generators' clock) to
    its database row saying ``replay_available = 1`` (seen by polling, within
    50 ms): a saved replay as FAF's users see it."""
    last_upload: dict[int, float] = {}
    for result in results:
        for upload in result["uploads"]:
            if upload["closed_at"]:
                last_upload[upload["game"]] = max(last_upload.get(upload["game"], 0.0), upload["closed_at"])
    return sorted(available_at[g] - last_upload[g] for g in available_at if g in last_upload)


def save_latencies(server: Server) -> list[float]:
    """Per game: seconds from its last upload ending to its file saved (the server's own clock)."""
    last_upload: dict[int, float] = {}
    saved_at: dict[int, float] = {}
    for event in server.events():
        namespace, game = event.get("log_namespace"), event.get("game_id")
        if namespace == "faf_replay.replay.upload" and game is not None:
            last_upload[game] = max(last_upload.get(game, 0.0), event["log_time"])
        elif namespace == "faf_replay.save.saver" and game is not None and "path" in event:
            saved_at[game] = event["log_time"]
    return sorted(saved_at[g] - last_upload[g] for g in saved_at if g in last_upload)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]


def _py_spy() -> str:
    """py-spy from this virtualenv, else from the PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


class Rows:
    """FAF's tables in a fresh database of the test suite's private MariaDB,
    with a game row (4 players, featured mod, map) for every game of the run."""

    def __init__(self, games: list[dict]) -> None:
        import MySQLdb  # noqa: PLC0415

        from tests import mariadb  # noqa: PLC0415

        server = mariadb.server()
        self.name = mariadb.fresh_database()
        self.port = server.port
        self.url = f"mysql://{mariadb.USER}@127.0.0.1:{server.port}/{self.name}"
        self.password = mariadb.PASSWORD
        self.connection = MySQLdb.connect(
            unix_socket=server.socket, user="root", db=self.name, charset="utf8mb4", autocommit=True
        )
        with self.connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO login (id, login) VALUES (%s, %s)", [(n, f"u{n}") for n in range(1, 9)]
            )
            cursor.execute("INSERT INTO game_featuredMods (id, gamemod) VALUES (0, 'faf')")
            cursor.execute("INSERT INTO map_version (id, folder_name) VALUES (1, 'scmp_009.v0003')")
            cursor.execute(
                "INSERT INTO updates_faf (id, filename, path) VALUES (1, 'ForgedAlliance.exe', 'bin')"
            )
            cursor.execute(
                "INSERT INTO updates_faf_files (fileId, version, name, md5) VALUES (1, 3800, 'f', 'x')"
            )
            cursor.executemany(
                "INSERT INTO game_stats (id, startTime, gameType, gameMod, host, mapId, gameName)"
                " VALUES (%s, NOW(), 'DEMORALIZATION', 0, 1, 1, %s)",
                [(game["id"], f"bench {game['id']}") for game in games],
            )
            cursor.executemany(
                "INSERT INTO game_player_stats (gameId, playerId, AI, team) VALUES (%s, %s, 0, %s)",
                [(game["id"], player, 2 + player % 2) for game in games for player in range(1, 5)],
            )

    def watch(self, interval: float = 0.05) -> None:
        """Note, from now on, when each game's row first says its replay is
        available (``replay_available = 1``): what a user of FAF's site sees.
        Polled on a connection of its own every ``interval`` seconds."""
        import MySQLdb  # noqa: PLC0415

        from tests import mariadb  # noqa: PLC0415

        self.available_at: dict[int, float] = {}
        self._watching = threading.Event()
        self._watching.set()
        connection = MySQLdb.connect(
            unix_socket=mariadb.server().socket, user="root", db=self.name, autocommit=True
        )

        def poll() -> None:
            with connection.cursor() as cursor:
                while self._watching.is_set():
                    cursor.execute("SELECT id FROM game_stats WHERE replay_available = 1")
                    now = time.time()
                    for (game_id,) in cursor.fetchall():
                        self.available_at.setdefault(int(game_id), now)
                    time.sleep(interval)
            connection.close()

        self._poller = threading.Thread(target=poll, name="rows-watcher", daemon=True)
        self._poller.start()

    def stop_watching(self) -> None:
        self._watching.clear()
        self._poller.join(5)

    def recorded(self) -> int:
        """Games whose row says their replay is available, with a tick count."""
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM game_stats WHERE replay_available = 1 AND replay_ticks IS NOT NULL"
            )
            return int(cursor.fetchone()[0])


def start_server(args, games: list[dict]) -> tuple[Process, Rows | None]:
    """The server ``--server`` names, started on a fresh work directory, and its database if any."""
    workdir = _workdir()
    if args.kind in ("floor", "floor-every-write"):
        from benchmarks.floor import FloorProcess  # noqa: PLC0415

        return FloorProcess(workdir, "tick" if args.kind == "floor" else "every-write"), None
    if args.kind == "rust":
        from benchmarks.rust_anchor import RustAnchor  # noqa: PLC0415

        if not args.rust_anchor:
            sys.exit("--server rust needs --rust-anchor (the binary, see benchmarks/rust_anchor.py)")
        rows = Rows(games)
        rust = RustAnchor(
            workdir, args.rust_anchor, rows, delay=args.delay, grace=args.grace, zstd_level=args.zstd_level
        )
        return rust, rows
    if args.kind == "anchor":
        from benchmarks.anchor import Anchor  # noqa: PLC0415

        if not args.anchor_path:
            sys.exit(
                "--server anchor needs --anchor-path (a checkout with its .venv, see benchmarks/anchor.py)"
            )
        rows = Rows(games)
        return Anchor(workdir, args.anchor_path[0], rows, delay=args.delay, grace=args.grace), rows
    options = [
        f"--delay={args.delay}",
        f"--grace={args.grace}",
        f"--zstd-level={args.zstd_level}",
        *args.server,
    ]
    rows = None
    if args.mariadb:
        rows = Rows(games)
        os.environ["FAF_REPLAY_DB_PASSWORD"] = rows.password
        # FAF's production pool size (its config.yaml: pool_size 8), as the Rust server gets it.
        options += [f"--db={rows.url}", "--db-pool-size=8"]
    checkout = Path(args.checkout).resolve() if getattr(args, "checkout", None) else ROOT
    return Server(workdir, options, checkout), rows


def start_profiler(pid: int, path: str) -> subprocess.Popen:
    """py-spy recording ``pid`` (raw collapsed stacks, 100 Hz) into ``path`` until the process ends."""
    command = [_py_spy(), "record", "--pid", str(pid), "--format", "raw", "--rate", "100"]
    return subprocess.Popen(
        [*command, "--output", path, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def capacity(args) -> dict:
    games = plan_games(args)
    server, rows = start_server(args, games)
    sampler = Sampler(server)
    profiler = start_profiler(server.process.pid, args.profile) if args.profile else None
    if rows is not None:
        rows.watch()
    sampler.mark("start")
    baseline, _ = server.memory()
    start_at = time.time() + args.ramp
    slices = [games[i :: args.generators] for i in range(args.generators)]
    specs = [
        {
            "host": "127.0.0.1",
            "port": server.game_port,
            "games": part,
            "start_at": start_at,
            "interval": 0.1,
            "rate": args.rate,
            "acceleration": args.acceleration,
            "timeout": args.timeout,
        }
        for part in slices
    ]
    results = run_generators(specs, sampler)
    last_upload = max((u["closed_at"] or 0) for r in results for u in r["uploads"])
    sampler.marks["uploads ended"] = last_upload
    sampler.sample()
    outcome = verify(server, games, results, timeout=args.grace + 60)
    if rows is not None:
        deadline = time.time() + 60
        while rows.recorded() < outcome["saved"] and time.time() < deadline:
            time.sleep(0.5)
        outcome["database_rows_updated"] = rows.recorded()
    sampler.mark("saved")
    row_latency = []
    if rows is not None:
        time.sleep(0.2)  # one more look of the row watcher at the rows counted above
        rows.stop_watching()
        row_latency = row_latencies(results, rows.available_at)
    stall = server.metric("replayserver_reactor_lag_max_seconds")
    _, peak = server.memory()
    received = server.metric("replayserver_received_bytes_total")
    sent = server.metric("replayserver_sent_bytes_total")
    exit_code = server.stop()
    if profiler is not None:
        profiler.wait(60)
    latencies = save_latencies(server)
    steady = [s[2] for s in sampler.samples if start_at + 5 <= s[0] <= sampler.marks["uploads ended"]]
    connections = args.games * (args.uploaders + args.watchers)
    figures = {
        "server": server.kind,
        **{f"server_{key}": value for key, value in server.describe().items()},
        "machine_cpus": os.cpu_count(),
        "games": args.games,
        "connections": connections,
        "server_cpu_seconds": {
            "streaming": round(sampler.cpu_between("start", "uploads ended"), 2),
            "saving": round(sampler.cpu_between("uploads ended", "saved"), 2),
            "total": round(sampler.cpu_between("start", "saved"), 2),
        },
        "streaming_seconds": round(sampler.marks["uploads ended"] - start_at, 1),
        "generators_cpu_seconds": round(sum(r["cpu"] for r in results), 2),
        "rss_peak_mib": round(peak / 2**20, 1),
        "rss_steady_mib": round(statistics.median(steady) / 2**20, 1) if steady else None,
        "rss_baseline_mib": round(baseline / 2**20, 1),
        "rss_per_connection_kib": (
            round((statistics.median(steady) - baseline) / connections / 1024, 1) if steady else None
        ),
        "bytes_in": _rounded(received, 0),
        "bytes_out": _rounded(sent, 0),
        **outcome,
        "save_latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
        "save_latency_p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "row_latency_median_s": round(statistics.median(row_latency), 3) if row_latency else None,
        "row_latency_p99_s": round(percentile(row_latency, 0.99), 3) if row_latency else None,
        **watcher_timing(results, start_at, args.rate if args.acceleration is None else None, args.delay),
        "longest_reactor_stall_s": _rounded(stall, 4),
        "server_exit": exit_code,
    }
    if args.plot:
        plot(sampler, args.plot)
    return figures


def _rounded(value: float | None, digits: int) -> float | int | None:
    """A metric rounded, or None where the server has no such metric."""
    if value is None:
        return None
    return int(value) if digits == 0 else round(value, digits)


def plot(sampler: Sampler, path: str) -> None:
    import matplotlib  # noqa: PLC0415 - optional

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    t0 = sampler.samples[0][0]
    times = [s[0] - t0 for s in sampler.samples]
    cpu = [0.0] + [
        (b[1] - a[1]) / max(b[0] - a[0], 1e-6)
        for a, b in zip(sampler.samples, sampler.samples[1:], strict=False)
    ]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    top.plot(times, cpu)
    top.set_ylabel("server CPU (cores)")
    bottom.plot(times, [s[2] / 2**20 for s in sampler.samples])
    bottom.set_ylabel("server RSS (MiB)")
    bottom.set_xlabel("seconds")
    for name, at in sampler.marks.items():
        for axis in (top, bottom):
            axis.axvline(at - t0, color="grey", linestyle=":")
        top.annotate(name, (at - t0, 0), fontsize=7, rotation=90)
    fig.tight_layout()
    fig.savefig(path)


def idle(args) -> dict:
    workdir = _workdir()
    server = Server(workdir, [])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    time.sleep(1)
    before, _ = server.memory()
    socks = [socket.create_connection(("127.0.0.1", server.game_port)) for _ in range(args.connections)]
    held = 'replayserver_active_connections_count{category="initial"}'
    deadline = time.time() + 60
    while server.metric(held) < args.connections and time.time() < deadline:
        time.sleep(0.5)  # accepted by the server, not only by the kernel
    time.sleep(1)
    after, _ = server.memory()
    accepted = int(server.metric(held))
    for sock in socks:
        sock.close()
    server.stop()
    return {
        "machine_cpus": os.cpu_count(),
        "idle_connections": args.connections,
        "held_by_server": accepted,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "kib_per_idle_connection": round((after - before) / args.connections / 1024, 2),
    }


def watchers(args) -> dict:
    """A long game (all of it visible, its uploaders still connected), a crowd
    of watchers joining at once; then the uploaders leave and the game is
    saved: its save's CPU, time and the reactor's stalls meanwhile."""
    workdir = _workdir()
    server = Server(
        workdir, ["--delay=0", "--sample-interval=0.1", "--grace=1", f"--zstd-level={args.zstd_level}"]
    )
    stream = make_stream(args.recording, args.size, vary=True)
    uploaders = [socket.create_connection(("127.0.0.1", server.game_port)) for _ in range(args.uploaders)]
    for n, sock in enumerate(uploaders):
        sock.sendall(f"P/7/u{n}.SCFAreplay\0".encode() + stream)
    time.sleep(3)  # merged and visible
    before, _ = server.memory()
    cpu_before = server.cpu()
    started = time.time()
    crowd = [socket.create_connection(("127.0.0.1", server.game_port)) for _ in range(args.watchers)]
    for sock in crowd:
        sock.sendall(b"G/7/crowd\0")
        sock.setblocking(False)
    selector = selectors.DefaultSelector()
    received = {sock: 0 for sock in crowd}
    digests = {sock: hashlib.sha256() for sock in crowd}
    for sock in crowd:
        selector.register(sock, selectors.EVENT_READ)
    peak = before
    while any(count < len(stream) for count in received.values()) and time.time() - started < 300:
        for key, _ in selector.select(1):
            try:
                chunk = key.fileobj.recv(1 << 20)
            except BlockingIOError:
                continue
            received[key.fileobj] += len(chunk)
            digests[key.fileobj].update(chunk)
        peak = max(peak, server.memory()[0])
    elapsed = time.time() - started
    cpu = server.cpu() - cpu_before
    good = sum(1 for d in digests.values() if d.hexdigest() == hashlib.sha256(stream).hexdigest())
    storm_stall = server.metric("replayserver_reactor_lag_max_seconds")
    for sock in crowd:
        sock.close()
    # the save: every uploader leaves; the grace period (1 s) ends the game
    stalls_before = _stalls_over(server, "0.05")
    cpu_before_save = server.cpu()
    for sock in uploaders:
        sock.close()
    from faf_replay.save.vault import vault_path  # noqa: PLC0415

    path = vault_path(workdir / "replays", 7)
    deadline = time.time() + 120
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    save_cpu = server.cpu() - cpu_before_save
    stalls_during_save = _stalls_over(server, "0.05") - stalls_before
    server.stop()
    import fafreplay  # noqa: PLC0415

    with path.open("rb") as file:
        saved_ok = fafreplay.extract_scfa(file) == stream
    save_seconds = next(
        (e["elapsed"] for e in server.events() if e.get("game_id") == 7 and "elapsed" in e), None
    )
    total = sum(received.values())
    return {
        "machine_cpus": os.cpu_count(),
        "watchers": args.watchers,
        "replay_bytes": len(stream),
        "seconds": round(elapsed, 2),
        "aggregate_mb_per_s": round(total / elapsed / 1e6, 1),
        "watchers_verified": good,
        "server_cpu_seconds": round(cpu, 2),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_peak_mib": round(peak / 2**20, 1),
        "longest_reactor_stall_s": round(storm_stall, 4),
        "zstd_level": args.zstd_level,
        "saved_file_bytes": path.stat().st_size,
        "saved_verified": saved_ok,
        "save_seconds": round(save_seconds, 3) if save_seconds is not None else None,
        "save_phase_cpu_seconds": round(save_cpu, 2),
        "stalls_over_50ms_while_saving": int(stalls_during_save),
    }


def _stalls_over(server: Server, bucket: str) -> float:
    """How many probes found the reactor later than ``bucket`` seconds."""
    total = server.metric("replayserver_reactor_lag_seconds_count")
    within = server.metric(f'replayserver_reactor_lag_seconds_bucket{{le="{bucket}"}}')
    return total - within


def table(figures: dict) -> str:
    width = max(len(k) for k in figures)
    lines = []
    for key, value in figures.items():
        shown = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="faf-replay load benchmark")
    parser.add_argument("--keep", action="store_true", help="keep the servers' vault, spool and log")
    commands = parser.add_subparsers(dest="command", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--games", type=int, default=100)
    shared.add_argument("--uploaders", type=int, default=4)
    shared.add_argument("--watchers", type=int, default=2)
    shared.add_argument("--rate", type=float, default=5000, help="bytes per second per uploader")
    shared.add_argument("--acceleration", type=float, default=None, help="pace by the replay's ticks instead")
    shared.add_argument("--size", type=int, default=300_000, help="bytes per upload")
    shared.add_argument("--recording", default="example")
    shared.add_argument(
        "--vary", action="store_true", help="vary the repeated body (compresses like a real long game)"
    )
    shared.add_argument("--generators", type=int, default=4)
    shared.add_argument("--ramp", type=float, default=10, help="seconds to open every connection")
    shared.add_argument("--delay", type=float, default=5)
    shared.add_argument("--grace", type=float, default=2)
    shared.add_argument("--zstd-level", type=int, default=10)
    shared.add_argument("--diverging", type=int, default=10, help="every n-th game has a diverging uploader")
    shared.add_argument("--early", type=int, default=5, help="every n-th game has an uploader leaving early")
    shared.add_argument("--late-watchers-after", type=float, default=20)
    shared.add_argument("--timeout", type=float, default=1800)
    shared.add_argument("--plot", default=None, help="write CPU and memory over time to a PNG (matplotlib)")
    shared.add_argument(
        "--profile", default=None, help="record the server with py-spy (collapsed stacks) to this file"
    )
    shared.add_argument(
        "--mariadb", action="store_true", help="save through the test suite's private MariaDB, a row per game"
    )
    shared.add_argument(
        "--server",
        dest="kind",
        default="faf-replay",
        choices=["faf-replay", "floor", "floor-every-write", "rust", "anchor"],
        help="the server to load: faf-replay, the floor (benchmarks/floor.py), the Rust server FAF runs "
        "(--rust-anchor) or the asyncio anchor (--anchor-path)",
    )
    shared.add_argument(
        "--rust-anchor",
        help="the faf_rust_replayserver binary, built by hand from its README (benchmarks/rust_anchor.py)",
    )
    shared.add_argument(
        "--anchor-path",
        action="append",
        help="faf-aio-replayserver's checkout, with its .venv (--compare: repeat it to run several)",
    )
    shared.add_argument(
        "--compare",
        action="store_true",
        help="run faf-replay, faf-replay at zstd 19, both floors and (with --anchor-path) the anchor in turn",
    )
    shared.add_argument(
        "--checkout",
        help="run faf-replay from this checkout instead of this one (another commit, same options)",
    )
    shared.add_argument(
        "--before",
        help="--compare: also run faf-replay from this checkout (the code before a change), same load",
    )
    shared.add_argument("server", nargs="*", help="more faf-replay options, after --")
    commands.add_parser("capacity", parents=[shared], help="many games streaming at once")
    cost = commands.add_parser(
        "cost", parents=[shared], help="capacity with the anchor's cost scenario: 400 games of 300 KB"
    )
    cost.set_defaults(games=400, size=300_000)
    commands.add_parser("generator")
    quiet = commands.add_parser("idle", help="memory per idle connection")
    quiet.add_argument("--connections", type=int, default=5000)
    crowd = commands.add_parser("watchers", help="many watchers joining one long game")
    crowd.add_argument("--watchers", type=int, default=200)
    crowd.add_argument("--size", type=int, default=5_600_000)
    crowd.add_argument("--recording", default="example")
    crowd.add_argument("--uploaders", type=int, default=8)
    crowd.add_argument("--zstd-level", type=int, default=10)
    args = parser.parse_args()
    if args.command == "generator":
        print(json.dumps(generator(json.loads(sys.stdin.read()))))
        return
    run = {"capacity": capacity, "cost": capacity, "idle": idle, "watchers": watchers}[args.command]
    if getattr(args, "compare", False):
        from benchmarks.compare import compare  # noqa: PLC0415

        figures = compare(args, run, table)
    else:
        figures = run(args)
        print(table(figures))
    if args.keep:
        print("kept: " + " ".join(str(path) for path in _WORKDIRS))
    else:
        for path in _WORKDIRS:
            shutil.rmtree(path, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""The server under load: faf-replay under ``twistd`` (this checkout or another), its samples of CPU
and memory, and the choice of server ``--server`` names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.load.paths import ROOT
from benchmarks.load.plans import GamePlan
from benchmarks.load.rows import Rows
from benchmarks.process import Process
from tests.support.processes import TWISTD


class Server(Process):
    """faf-replay (this checkout, or ``checkout``) under ``twistd``, on free ports, logging JSON."""

    kind = "faf-replay"

    def __init__(self, workdir: Path, options: list[str], checkout: Path = ROOT) -> None:
        command = [
            *TWISTD,
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


#: Every server's scratch directory, removed at the end unless --keep.
WORKDIRS: list[Path] = []


def new_workdir() -> Path:
    """A scratch directory for one server (vault, spool, log), removed at the end unless --keep."""
    path = Path(tempfile.mkdtemp(prefix="faf-replay-bench-"))
    WORKDIRS.append(path)
    return path


def start_server(args, games: list[GamePlan]) -> tuple[Process, Rows | None]:
    """The server ``--server`` names, started on a fresh work directory, and its database if any."""
    workdir = new_workdir()
    if args.kind in ("floor", "floor-every-write"):
        from benchmarks.floor import FloorProcess  # noqa: PLC0415

        return FloorProcess(workdir, "tick" if args.kind == "floor" else "every-write"), None
    if args.kind == "rust":
        from benchmarks.rust_anchor import RustAnchor  # noqa: PLC0415

        if not args.rust_anchor:
            sys.exit("--server rust needs --rust-anchor (the binary, see benchmarks/rust_anchor.py)")
        rows = Rows([game.id for game in games])
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
        rows = Rows([game.id for game in games])
        return Anchor(workdir, args.anchor_path[0], rows, delay=args.delay, grace=args.grace), rows
    options = [
        f"--delay={args.delay}",
        f"--grace={args.grace}",
        f"--zstd-level={args.zstd_level}",
        *args.server,
    ]
    rows = None
    if args.mariadb:
        rows = Rows([game.id for game in games])
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


def _py_spy() -> str:
    """py-spy from this virtualenv, else from the PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"

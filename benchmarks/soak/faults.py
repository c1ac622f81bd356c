"""The soak's faults, done to the stack at their planned time, and what each left durable.

Before the server is killed (SIGKILL) or stopped (SIGTERM), the spool is read from outside
(:func:`spooled`): for every game not yet saved, how many bytes of each upload its files hold.
A kill -9 cannot take back what the spool's files hold (the kernel has it, whatever the process
did), and a stop saves at least that: it is the floor under what each cut game's replay must keep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import reactor, task, threads
from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks

from benchmarks.soak.plan import Fault
from benchmarks.soak.stack import Database, Disk, Network, ReplayServer


def spooled(spool: Path) -> dict[int, dict[str, int]]:
    """Per game in ``<spool>/games``: per upload (by its name), the bytes after ``P/…\\0`` its
    file holds."""
    found: dict[int, dict[str, int]] = {}
    games = spool / "games"
    if not games.is_dir():
        return found
    for folder in games.iterdir():
        if not folder.name.isdigit():
            continue
        uploads = found.setdefault(int(folder.name), {})
        for path in folder.glob("*.upload"):
            try:
                with path.open("rb") as file:
                    start = file.read(256)
                    size = path.stat().st_size
            except FileNotFoundError:
                continue
            end = start.find(b"\0")
            if end >= 0:
                name = start[:end].decode(errors="replace")
                uploads[name] = max(uploads.get(name, 0), size - end - 1)
    return found


@dataclass
class Done:
    """A fault as it happened: kind, when it began and ended (seconds into the run)."""

    kind: str
    began: float
    ended: float
    storm: bool
    detail: str = ""


@dataclass
class Faults:
    """Does the plan's faults to the stack; keeps what was done and what was durable."""

    server: ReplayServer
    database: Database
    spool: Disk
    vault: Disk
    network: Network
    started_at: float
    #: Called with the port of each life's server once it listens.
    on_restart: Any = None
    done: list[Done] = field(default_factory=list)
    #: (kind, seconds into the run, spooled()) taken just before each kill and each stop.
    durable: list[tuple[str, float, dict[int, dict[str, int]]]] = field(default_factory=list)
    #: Exit codes of SIGTERM stops.
    stop_codes: list[int] = field(default_factory=list)
    #: Seconds each restart took until the server listened again.
    restarts: list[float] = field(default_factory=list)
    #: Called with what the spool holds just before each kill and each stop.
    before_restart: Any = None

    def __post_init__(self) -> None:
        self.server_lock = DeferredLock()
        self.database_lock = DeferredLock()
        self.disk_locks = {"spool-full": DeferredLock(), "vault-full": DeferredLock()}
        self.pending: list[Deferred] = []
        self.server_up = False

    def now(self) -> float:
        return time.time() - self.started_at

    def schedule(self, fault: Fault) -> None:
        delay = max(0.0, self.started_at + fault.at - time.time())
        self.pending.append(task.deferLater(reactor, delay, self.do, fault))

    @inlineCallbacks
    def do(self, fault: Fault):
        if fault.kind == "loss":
            self.network.lose(fault.level)
            self.done.append(Done("loss", self.now(), self.now(), False, f"{fault.level / 10:g} %"))
        elif fault.kind in ("kill", "deploy"):
            yield self.server_lock.run(self._restart, fault)
        elif fault.kind in ("db-kill", "db-hang"):
            yield self.database_lock.run(self._database, fault)
        else:
            yield self.disk_locks[fault.kind].run(self._fill, fault)

    @inlineCallbacks
    def start_server(self):
        began = time.monotonic()
        self.server.start()
        while not self.server.listening():
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.restarts.append(time.monotonic() - began)
        self.server_up = True

    @inlineCallbacks
    def _restart(self, fault: Fault):
        began = self.now()
        held = spooled(self.spool.path)
        self.durable.append((fault.kind, began, held))
        if self.before_restart is not None:
            self.before_restart(fault.kind, held)
        self.server_up = False
        if fault.kind == "kill":
            self.server.kill()
            detail = "SIGKILL"
        else:
            code = yield threads.deferToThread(self.server.terminate)
            self.stop_codes.append(code)
            detail = f"SIGTERM, exit {code}"
        yield self.start_server()
        self.done.append(Done(fault.kind, began, self.now(), fault.storm, detail))

    @inlineCallbacks
    def _database(self, fault: Fault):
        began = self.now()
        if fault.kind == "db-kill":
            yield threads.deferToThread(self.database.kill)
            yield task.deferLater(reactor, fault.duration, lambda: None)
            yield threads.deferToThread(self.database.start)
        else:
            self.database.hang()
            yield task.deferLater(reactor, fault.duration, lambda: None)
            self.database.resume()
        self.done.append(Done(fault.kind, began, self.now(), fault.storm))

    @inlineCallbacks
    def _fill(self, fault: Fault):
        disk = self.spool if fault.kind == "spool-full" else self.vault
        began = self.now()
        try:
            yield threads.deferToThread(disk.fill)
            yield task.deferLater(reactor, fault.duration, lambda: None)
        finally:
            disk.free()
        self.done.append(Done(fault.kind, began, self.now(), fault.storm))

    def overlapping(self) -> int:
        """Faults (not loss, which never stops) that began while another was going on."""
        spans = sorted((d.began, d.ended) for d in self.done if d.kind != "loss")
        return sum(1 for i, (began, _) in enumerate(spans) if any(b <= began <= e for b, e in spans[:i]))

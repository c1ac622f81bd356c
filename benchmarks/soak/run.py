"""One soak run, on the reactor, inside the private network namespace: the stack started, the
plan played (games, watchers, hostile cases, faults), the server sampled, everything drained,
then every check; returns the report (``report.py`` prints it)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from twisted.internet import reactor, task, threads
from twisted.internet.defer import DeferredList, inlineCallbacks, returnValue

from benchmarks.soak import checks, flat
from benchmarks.soak.faults import Faults
from benchmarks.soak.plan import KINDS, Plan, server_timers
from benchmarks.soak.players import WRITE_INTERVAL, Players
from benchmarks.soak.stack import Database, Disk, Network, ReplayServer

#: Seconds between two samples of the server.
SAMPLE_EVERY = 5.0
#: Seconds the end waits for the spool and the outbox to empty once the last game ended.
DRAIN = 600.0


def sleep(seconds: float):
    return task.deferLater(reactor, max(0.0, seconds), lambda: None)


@inlineCallbacks
def wait_for(condition, timeout: float, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        yield sleep(step)
    returnValue(condition())


class Sampler:
    """The server's memory (resident, and the Python allocator's live blocks), descriptors,
    threads, spool size and reactor lag, every few seconds."""

    def __init__(self, server: ReplayServer, faults: Faults, spool: Disk, players: Players) -> None:
        self.server, self.faults, self.spool, self.players = server, faults, spool, players
        self.samples: list[flat.Sample] = []
        self.load: list[tuple[float, int, int]] = []  # (at, uploads sending, games not ended)
        self._life_began: dict[int, float] = {}
        self._lag: tuple[int, float, float] | None = None  # life, sum, count

    @inlineCallbacks
    def sample(self):
        pid, life = self.server.pid, self.server.lives
        at = self.faults.now()
        self.load.append(
            (
                at,
                len(self.players.uploading),
                sum(1 for g in self.players.games.values() if g.ended_at is None),
            )
        )
        if pid is None or not self.faults.server_up:
            return
        self._life_began.setdefault(life, at)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            spool = self.spool.used()
            text = yield threads.deferToThread(self.server.metrics)
        except (OSError, ValueError):
            return  # it died or is dying: a fault's doing
        values = {
            "rss_mib": int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024,
            "threads": float(re.search(r"Threads:\s+(\d+)", status).group(1)),
            "fds": float(fds),
            "spool_mib": spool / 2**20,
            # The load, what the slopes are taken at (flat.py): the connections as the server
            # counts them (a client may believe a connection open that the server ended: a
            # WebSocket close lost to the packet loss), the bytes as the players sent them.
            "uploads": _metric(text, 'replayserver_active_connections_count{category="writer"}'),
            "watchers": _metric(text, 'replayserver_active_connections_count{category="reader"}'),
            "held_mib": sum(g.sent[-1][1] for g in self.players.games.values() if g.ended_at is None) / 2**20,
            "sent_mib": sum(upload.sent for upload in self.players.uploading) / 2**20,
        }
        values["heap_kblocks"] = _metric(text, "replayserver_python_allocated_blocks") / 1000
        values["c_in_use_mib"] = _metric(text, "replayserver_c_allocator_in_use_bytes") / 2**20
        values["c_free_mib"] = _metric(text, "replayserver_c_allocator_free_bytes") / 2**20
        lag_sum = _metric(text, "replayserver_reactor_lag_seconds_sum")
        lag_count = _metric(text, "replayserver_reactor_lag_seconds_count")
        if self._lag is not None and self._lag[0] == life and lag_count > self._lag[2]:
            values["lag_ms"] = (lag_sum - self._lag[1]) / (lag_count - self._lag[2]) * 1000
        self._lag = (life, lag_sum, lag_count)
        self.samples.append(flat.Sample(at, life, at - self._life_began[life], values))
        if len(self.samples) % 12 == 0:  # a line a minute, for whoever watches a long run
            shown = ", ".join(f"{name} {value:.1f}" for name, value in values.items())
            print(f"{at:6.0f} s: life {life}, {self.load[-1][2]} games running, {shown}", flush=True)


def server_environment(environ: Mapping[str, str], password: str) -> dict[str, str]:
    """The server's environment: this one, as the container image runs it. Without
    ``RUST_BACKTRACE``, which a Rust toolchain sets for its user and the image does not: with it,
    the replay parser's first panic (a hostile header, which the server survives) prints a
    backtrace and keeps its symbol tables, some 35 MiB, for the life of the process
    (docs/operations.md, "Errors"), a step in the memory that is the shell's, not the server's."""
    kept = {name: value for name, value in environ.items() if name != "RUST_BACKTRACE"}
    return {**kept, "FAF_REPLAY_DB_PASSWORD": password}


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@inlineCallbacks
def run(plan: Plan, workdir: Path, extra_options: list[str], cases: list) -> dict:
    timers = server_timers(plan.scale.compression)
    spool = Disk(workdir / "spool", 256)
    vault = Disk(workdir / "vault", 1024)
    network = Network()
    database = yield threads.deferToThread(Database, [(game.id, len(game.uploads)) for game in plan.games])
    options = [
        "--vault=vault",
        "--spool=spool",
        f"--db={database.url}",
        "--db-pool-size=8",
        "--max-connections-per-address=1000000",
        "--max-connections=1000000",
        *(f"--{name}={value}" for name, value in timers.items()),
        *extra_options,
    ]
    server = ReplayServer(workdir, options, server_environment(os.environ, database.password))
    faults = Faults(server, database, spool, vault, network, started_at=time.time())
    try:
        yield faults.start_server()
        report = yield _play(plan, timers, faults, cases)
    finally:
        if server.pid is not None:
            server.kill()
        database.remove()
        network.clear()
    returnValue(report)


@inlineCallbacks
def _play(plan: Plan, timers: dict[str, float], faults: Faults, cases: list):
    server, database, spool, vault, network = (
        faults.server,
        faults.database,
        faults.spool,
        faults.vault,
        faults.network,
    )
    started_at = faults.started_at = time.time()
    vanish_for = 3 * (timers["keepalive-idle"] + 6 * timers["keepalive-interval"])
    players = Players(started_at, timers["delay"], network.blackhole, network.release, vanish_for)
    gaps: list[tuple[str, str, int, int, int]] = []
    sync = timers["spool-sync"]

    def durability(kind: str, held: dict) -> None:
        # What each upload had sent a second (and several syncs) ago should be on disk.
        spool_full = "spool full" if spool.full else "spool has room"
        gaps.append((kind, spool_full, *players.behind(held, time.time() - max(1.0, 4 * sync))))

    faults.before_restart = durability
    for game in plan.games:
        reactor.callLater(game.start, players.start_game, game)
    for fault in plan.faults:
        faults.schedule(fault)
    from tests.support.mutations import FUZZ_IDS  # noqa: PLC0415

    for number, (at, case) in enumerate(zip(plan.hostile, cases, strict=False)):
        reactor.callLater(at, players.start_hostile, case, FUZZ_IDS + number)
    ticking = task.LoopingCall(players.tick)
    ticking.start(WRITE_INTERVAL)
    sampler = Sampler(server, faults, spool, players)
    sampling = task.LoopingCall(sampler.sample)
    sampling.start(SAMPLE_EVERY)

    yield sleep(started_at + plan.seconds - time.time())
    yield DeferredList(faults.pending)
    network.clear()
    last_join = max((g.start + w.join for g in plan.games for w in g.watchers), default=0.0)
    yield sleep(started_at + last_join + 1 - time.time())
    ended = yield wait_for(lambda: all(g.ended_at is not None for g in players.games.values()), DRAIN)
    drained = yield wait_for(lambda: _spool_empty(spool.path), DRAIN)
    # A watcher the server closed by RST (a close handshake that timed out) never hears of
    # it if the loss rule drops that one packet (TCP does not send it again): not waited for long.
    yield wait_for(lambda: all(w.ended for w in players.watches), 30)
    drain_seconds = faults.now() - plan.seconds
    players.stopping = True
    for looping in (ticking, sampling):
        if looping.running:
            looping.stop()
    final_code = yield threads.deferToThread(server.terminate)

    verdicts = checks.Verdicts()
    rows = yield threads.deferToThread(database.rows)
    saved_bodies = {}
    for game_id, log in players.games.items():
        saved_bodies[game_id] = checks.check_game(
            verdicts, log, vault=vault.path, rows=rows, done=faults.done, durable=faults.durable
        )
    for watch in players.watches:
        log = players.games[watch.game]
        checks.check_watcher(verdicts, watch, log, saved_bodies.get(watch.game))
    server_facts = checks.check_server(verdicts, spool.path, server.log_lines(), set(players.games))
    if not ended:
        verdicts.problem("not ended", "some games' uploads never stopped")
    if not drained:
        verdicts.problem(
            "not drained", f"the spool still held games or outbox entries {DRAIN:.0f} s after the end"
        )
    if final_code != 0 or any(code != 0 for code in faults.stop_codes):
        verdicts.problem("exit code", f"SIGTERM exits: {faults.stop_codes}, last {final_code}")

    injected = {kind: sum(1 for d in faults.done if d.kind == kind) for kind in KINDS}
    injected["blackhole"] = sum(g.vanished for g in players.games.values())
    busy = flat.backlogs([(d.kind, d.began, d.ended) for d in faults.done])
    fitted = flat.slopes(sampler.samples, plan.seconds, plan.settling, busy)
    loads = [load for load in sampler.load if load[0] >= plan.seconds / 4 and load[0] <= plan.seconds]
    return {
        "plan": {
            "minutes": plan.seconds / 60,
            "seed": plan.seed,
            "games_at_once": plan.scale.games,
            "compression": plan.scale.compression,
            "one_life": plan.one_life,
            "timers": timers,
        },
        "games": len(plan.games),
        "games_started": len(players.games),
        "uploads": sum(len(g.uploads) for g in plan.games),
        "watchers": len(players.watches),
        "hostile_cases": players.hostile,
        "load_median": _median_load(loads),
        "faults": injected,
        "faults_overlapping": faults.overlapping(),
        "storms": sum(1 for d in faults.done if d.storm and d.kind == "kill"),
        "fault_log": [(d.kind, round(d.began, 1), round(d.ended, 1), d.detail) for d in faults.done],
        "restart_seconds": [round(s, 2) for s in faults.restarts],
        "durability_at_restarts": gaps,
        "watchers_open_at_end": [
            (w.game, w.plan.transport, w.plan.slow, w.connected, w.body)
            for w in players.watches
            if not w.ended
        ],
        "packets": {**network.counters(), "lost": network.lost},
        "replays_lost": verdicts.lost,
        "bytes_lost": verdicts.bytes_lost,
        "saved": verdicts.saved,
        "exact": verdicts.exact,
        "cut": verdicts.cut,
        "cut_kept_durable": verdicts.cut_kept,
        "cut_by_network": verdicts.cut_by_network,
        "cut_before_anything_durable": verdicts.nothing_durable,
        "rows_ok": verdicts.rows_ok,
        "watchers_checked": verdicts.watchers_checked,
        "watchers_whole": verdicts.watchers_whole,
        "drain_seconds": round(drain_seconds, 1),
        "server": server_facts,
        "slopes": fitted,
        "problems": verdicts.problems,
        "problem_counts": dict(verdicts.kinds),
        "samples": sampler.samples,
    }


def _median_load(loads: list[tuple[float, int, int]]) -> dict:
    if not loads:
        return {}
    uploads = sorted(u for _, u, _ in loads)
    games = sorted(g for _, _, g in loads)
    return {"uploads_sending": uploads[len(uploads) // 2], "games_running": games[len(games) // 2]}


def _spool_empty(spool: Path) -> bool:
    games = spool / "games"
    outbox = spool / "outbox"
    return not (games.is_dir() and any(games.iterdir())) and not (
        outbox.is_dir() and any(outbox.glob("*.json"))
    )

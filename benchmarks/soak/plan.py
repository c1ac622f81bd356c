"""What a soak run does, decided up front from its seed: every game, every watcher, every fault.

Pure data and arithmetic, no Twisted and no I/O: the same ``(minutes, seed, scale)`` always
gives the same plan, which is what makes a run repeatable from its report.

Time is compressed: a game FAF would play for 20 minutes is streamed in 20 / ``compression``
minutes, paced by its recording's own ticks, and the server's timers that count game time
(the delay, the grace, the stall and silence rules, keepalive, pings) are divided alike
(:func:`server_timers`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from benchmarks.soak import flat

#: Game ids of the run's honest games (their rows are in the database); fuzzed ones use
#: ``tests.support.mutations.FUZZ_IDS`` and up.
FIRST_GAME = 1_000_000
#: The recordings a game may stream (tests/data), by how many players it has.
DUEL = ("example", "example", "example", "8805603")
TEAM = ("22373098", "22373098", "example")
DIVERGING = "diverging_1"
#: Fault kinds, in the report's order. ``blackhole`` is planned per upload, ``loss`` as levels.
KINDS = ("kill", "deploy", "db-kill", "db-hang", "spool-full", "vault-full", "blackhole", "loss")
#: Minutes between two faults of a kind, on average, in an hour-long run (at least one each).
PERIODS = {"kill": 30, "deploy": 30, "db-kill": 10, "db-hang": 10, "spool-full": 12, "vault-full": 12}
#: How long a fault lasts (seconds of the run, drawn uniformly); kill and deploy are instants.
DURATIONS = {"db-kill": (5, 40), "db-hang": (5, 30), "spool-full": (10, 45), "vault-full": (10, 60)}
#: Minutes between two changes of the packet loss level, and its levels (per mille).
LOSS_PERIOD = 4
LOSS_LEVELS = (10, 20, 30, 40, 50)
#: Minutes between two storms: several faults at once.
STORM_PERIOD = 30
#: Faults that start a new server life (and storms, which hold a kill): in the first quarter
#: of the run only. A restart hides a leak (the new process starts empty), so the last three
#: quarters, the slopes' window, are one life: in an hour, 45 minutes, of which the resident
#: memory's slope needs the last 20 after its 25 of settling (``flat.SERIES_WARM_UP``).
RESTARTS = ("kill", "deploy")
RESTARTS_UNTIL = 0.25
#: Seconds of a settled life the slopes need at the least to be judged (``Plan.judges_slopes``).
FITTED_AFTER_SETTLING = 300.0


@dataclass(frozen=True)
class Scale:
    """How big and how fast: ``games`` at once on average, ``compression`` x real time."""

    games: int = 200
    compression: float = 10.0
    #: Fuzzed cases (the fuzz suite's) per minute of the run.
    hostile_per_minute: float = 12.0


@dataclass(frozen=True)
class UploadPlan:
    recording: str  # a name of tests/data, e.g. "example" or "diverging_1/3"
    transport: str  # "tcp" or "ws"
    #: Seconds after the game's start when it vanishes without a FIN (its packets dropped), or None.
    vanishes_at: float | None = None


@dataclass(frozen=True)
class WatchPlan:
    join: float  # seconds after the game's start (after its length: a watcher of an ended game)
    transport: str
    slow: bool  # reads in bursts with long pauses
    #: Seconds after joining when it leaves, or None: it stays until the server ends it.
    leaves_after: float | None = None


@dataclass(frozen=True)
class GamePlan:
    id: int
    start: float  # seconds into the run
    length: float  # seconds its stream is paced over
    uploads: tuple[UploadPlan, ...]
    watchers: tuple[WatchPlan, ...]


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float
    duration: float = 0.0
    #: For ``loss``: per mille of the game ports' packets dropped from ``at`` on.
    level: int = 0
    storm: bool = False


@dataclass(frozen=True)
class Plan:
    seconds: float
    seed: int
    scale: Scale
    games: tuple[GamePlan, ...]
    faults: tuple[Fault, ...]
    #: When each fuzzed case starts (seconds into the run); the cases are drawn from the seed.
    hostile: tuple[float, ...] = field(default=())
    #: Kills, deploys and storms were left out: the run is one server life (``--one-life``).
    one_life: bool = False

    @property
    def settling(self) -> float:
        """Seconds a new server life takes to hold games of every age, as a steady one does:
        its longest game (a life starts with none of the games before it; FA does not
        reconnect). The slopes leave these out of each life (``flat.fit``)."""
        return max((game.length for game in self.games), default=0.0)

    @property
    def judges_slopes(self) -> bool:
        """Whether its slopes are long enough to judge: its last life, which begins once
        the restarts are over, outlives every series' settling (``flat.SERIES_WARM_UP``) by
        :data:`FITTED_AFTER_SETTLING`. An hour does (45 minutes, 20 after the settling);
        a run under 40 minutes does not, and its slopes are shown, not judged."""
        last_life = self.seconds * (1.0 if self.one_life else 1.0 - RESTARTS_UNTIL)
        return last_life >= max(flat.SERIES_WARM_UP.values()) + FITTED_AFTER_SETTLING


def real_minutes(rng: random.Random, players: int) -> float:
    """How long FAF would play a game of ``players`` (minutes): duels short, team games long."""
    if players == 2:
        return rng.uniform(5, 25)
    if players == 4:
        return rng.uniform(12, 45)
    return rng.uniform(20, 60)


def plan_game(rng: random.Random, game_id: int, start: float, scale: Scale) -> GamePlan:
    players = rng.choice((2, 2, 2, 2, 4, 4, 4, 6, 8, 8))
    if rng.random() < 0.05:
        players, recordings = 6, [f"{DIVERGING}/{n}" for n in range(6)]
    else:
        recordings = [rng.choice(DUEL if players == 2 else TEAM)] * players
    length = real_minutes(rng, players) * 60 / scale.compression
    uploads = []
    for name in recordings:
        vanishes = rng.uniform(0.2, 0.8) * length if rng.random() < 0.01 else None
        if name.startswith(DIVERGING):
            # Which upload the merge follows there depends on who is left: the check knows the
            # answer only when all six send everything (drawn all the same: seeds keep their plans).
            vanishes = None
        uploads.append(UploadPlan(name, "ws" if rng.random() < 0.3 else "tcp", vanishes))
    watchers = []
    for _ in range(rng.choice((0, 0, 1, 1, 1, 2, 2, 3, 5))):
        when = rng.random()
        if when < 0.3:  # there from the start: follows the game the delay behind
            join = rng.uniform(0, 0.05 * length)
        elif when < 0.85:
            join = rng.uniform(0.05, 1.0) * length
        else:  # after the end: served what was saved
            join = length + rng.uniform(0, 60 / scale.compression * 10)
        leaves = rng.uniform(5, 30) * 60 / scale.compression if rng.random() < 0.2 else None
        watchers.append(WatchPlan(join, "ws" if rng.random() < 0.3 else "tcp", rng.random() < 0.15, leaves))
    return GamePlan(game_id, start, length, tuple(uploads), tuple(watchers))


def mean_length(scale: Scale, samples: int = 2000) -> float:
    rng = random.Random(0)
    return sum(plan_game(rng, 0, 0, scale).length for _ in range(samples)) / samples


def plan_faults(rng: random.Random, seconds: float, *, one_life: bool = False) -> list[Fault]:
    """Each kind at random times (at least once), loss levels throughout, and storms: a kill
    -9 while the database is down and both disks are full, the database hanging after it.
    Restarts and storms come in the first quarter (:data:`RESTARTS_UNTIL`); with ``one_life``,
    none (the games are the seed's all the same)."""
    hour_share = seconds / 3600
    first, last, restarts_last = 0.1 * seconds, 0.85 * seconds, RESTARTS_UNTIL * seconds
    faults = []
    for kind, period in PERIODS.items():
        if one_life and kind in RESTARTS:
            continue
        until = restarts_last if kind in RESTARTS else last
        for _ in range(max(1, round(hour_share * 60 / period))):
            low, high = DURATIONS.get(kind, (0, 0))
            faults.append(Fault(kind, rng.uniform(first, until), rng.uniform(low, high)))
    for _ in range(0 if one_life else max(1, round(hour_share * 60 / STORM_PERIOD))):
        at = rng.uniform(first, restarts_last)
        faults += [
            Fault("db-kill", at, rng.uniform(10, 30), storm=True),
            Fault("spool-full", at + 1, rng.uniform(10, 30), storm=True),
            Fault("vault-full", at + 1, rng.uniform(10, 30), storm=True),
            Fault("kill", at + rng.uniform(2, 8), storm=True),
            Fault("db-hang", at + rng.uniform(35, 45), rng.uniform(5, 15), storm=True),
        ]
    changes = max(2, round(hour_share * 60 / LOSS_PERIOD))
    for n in range(changes):
        faults.append(Fault("loss", n * seconds / changes, level=rng.choice(LOSS_LEVELS)))
    return sorted(faults, key=lambda fault: fault.at)


def plan(minutes: float, seed: int, scale: Scale = Scale(), *, one_life: bool = False) -> Plan:
    """Games arriving at random (a Poisson process sized to keep ``scale.games`` running),
    each with its players and watchers; the faults (without kills, deploys and storms with
    ``one_life``: a long look at one process's memory); the fuzzed cases' start times."""
    rng = random.Random(seed)
    seconds = minutes * 60
    rate = scale.games / mean_length(scale)
    games, at = [], 0.0
    while True:
        at += rng.expovariate(rate)
        if at >= seconds:
            break
        games.append(plan_game(rng, FIRST_GAME + len(games), at, scale))
    games = _one_vanishes(games, seconds)
    faults = plan_faults(rng, seconds, one_life=one_life)
    hostile = sorted(rng.uniform(0, seconds) for _ in range(round(minutes * scale.hostile_per_minute)))
    return Plan(seconds, seed, scale, tuple(games), tuple(faults), tuple(hostile), one_life)


def _one_vanishes(games: list[GamePlan], seconds: float) -> list[GamePlan]:
    """The games, with a player vanishing in one of them if none does (a short run has every
    fault): one that starts after the restarts (a kill or a deploy would cut it first) and
    vanishes before the arrivals end."""
    after_restarts = RESTARTS_UNTIL * seconds + 10  # a storm's kill comes up to 8 s after it
    late = [game for game in games if game.start >= after_restarts]
    if any(upload.vanishes_at is not None for game in late for upload in game.uploads):
        return games
    for index, game in enumerate(games):
        if game.start >= after_restarts and game.start + game.length / 2 < seconds:
            first, *others = game.uploads
            vanishing = UploadPlan(first.recording, first.transport, game.length / 2)
            games[index] = GamePlan(game.id, game.start, game.length, (vanishing, *others), game.watchers)
            break
    return games


def server_timers(compression: float) -> dict[str, float]:
    """The server's timers that count game time, FAF's production values divided by
    ``compression`` (the delay, the grace, ...), and its sampling made finer alike."""
    production = {
        "delay": 300,
        "grace": 30,
        "stall-timeout": 60,
        "silent-upload-timeout": 300,
        "keepalive-idle": 60,
        "keepalive-interval": 10,
        "ws-ping-interval": 30,
        "ws-ping-timeout": 30,
        "watcher-stall-timeout": 120,
        "db-check-interval": 30,
        "spool-sync": 5,
    }
    timers = {name: round(value / compression, 3) for name, value in production.items()}
    timers["sample-interval"] = round(max(0.1, 2 / compression), 3)
    for name in ("keepalive-idle", "keepalive-interval"):  # the kernel counts whole seconds
        timers[name] = float(max(1, round(timers[name])))
    return timers

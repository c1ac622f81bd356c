"""How long one save takes end to end with the database: read the game's record,
compress and write the file with its outbox entry, mark the row, remove the entry.
Uses the test suite's private MariaDB.

    .venv/bin/python -m benchmarks.save_latency [--runs 15] [--recording example]

Prints the median and the spread, in milliseconds, with the machine's CPU count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from twisted.internet import defer, reactor
from twisted.python.failure import Failure

from faf_replay.database.bookkeeper import Bookkeeper
from faf_replay.database.outbox import Outbox
from faf_replay.database.pool import Database
from faf_replay.replay.finished import FinishedReplay
from faf_replay.save.saver import Saver
from faf_replay.save.workers import WorkerPool
from faf_replay.settings import Settings
from tests.support.recordings import recording, split


class _Cleanups:
    def __init__(self) -> None:
        self.calls: list = []

    def addCleanup(self, function, *args) -> None:  # the FafDatabase helper wants a test
        self.calls.append((function, args))

    def run(self) -> None:
        for function, args in reversed(self.calls):
            function(*args)


@defer.inlineCallbacks
def measure(runs: int, name: str, level: int):
    from tests.support.faf_database import FafDatabase  # noqa: PLC0415 - starts MariaDB

    cleanups = _Cleanups()
    db = FafDatabase(cleanups)  # type: ignore[arg-type]
    database = Database(db.config(), reactor)
    workers = WorkerPool(reactor, maximum=4)
    workers.startService()
    vault = tempfile.mkdtemp(prefix="faf-replay-bench-")
    bookkeeper = Bookkeeper(Outbox(os.path.join(vault, "outbox")), database, reactor, workers)
    saver = Saver(Settings(vault=vault, zstd_level=level), reactor, workers, database, bookkeeper)
    header, body = split(recording(name))
    timings = []
    try:
        for run in range(runs):
            game_id = db.standard_game(10_000 + run) if run == 0 else _another_game(db, 10_000 + run)
            started = time.perf_counter()
            saved = yield saver.save(FinishedReplay(game_id, header, body, "bench", 1.0, 2.0))
            timings.append(time.perf_counter() - started)
            assert saved is not None and db.replay_row(game_id)[1] == 1
            assert not len(bookkeeper.outbox), "the row was not marked in time"
    finally:
        database.close()
        workers.stopService()
        cleanups.run()
    return timings


def _another_game(db, game_id: int) -> int:
    host = db.execute("SELECT id FROM login WHERE login = 'Rowan'")[0][0]
    db.game(game_id, host=host, mod=0, map_id=None)
    return game_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--recording", default="example")
    parser.add_argument("--zstd-level", type=int, default=10)
    args = parser.parse_args()
    result: list = []

    def run():
        d = measure(args.runs, args.recording, args.zstd_level)
        d.addBoth(lambda value: (result.append(value), reactor.stop()))

    reactor.callWhenRunning(run)
    reactor.run()
    [timings] = result
    if isinstance(timings, Failure):
        print(timings.getTraceback(), file=sys.stderr)
        sys.exit(1)
    ms = sorted(t * 1000 for t in timings)
    print(
        f"save with database, {args.recording}, zstd {args.zstd_level}, {len(ms)} runs, "
        f"{os.cpu_count()} CPUs: median {statistics.median(ms):.1f} ms, "
        f"min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()

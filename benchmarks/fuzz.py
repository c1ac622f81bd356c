"""The long fuzz run: batches of fuzzed and honest games against a real server for N minutes.

    .venv/bin/python -m benchmarks.fuzz --minutes 5 [--seed S] [--cases 16] [--honest 2]
                                        [--session 20] [--no-shrink] [--keep DIR]

The same machinery as ``tests/system/test_fuzz.py`` (which runs a fixed share of it
in CI): a ``twistd faf-replay`` subprocess with a JSON log and fast timers, on
its own vault and spool. Each session runs ``--session`` batches (each
``--honest`` honest games beside ``--cases`` fuzzed cases, drawn by hypothesis
from seed S + session number), then SIGTERM (exit 0?), a restart on the same
spool (nothing may be left in ``<spool>/games/``), SIGTERM again, and a check of
every file in the vault. Sessions follow one another until the time is up;
then every distinct finding is shrunk (unless ``--no-shrink``): its batch is
made smaller and simpler, one step at a time, as long as the finding stays
(each try on a fresh server), and printed as the Python of its smallest case,
ready for a regression test. Prints one line per session, then how many cases
it tried and what it found: crashes, tracebacks and critical lines, lost or
wrong honest games, connections without a logged outcome, leftovers after the
restart; last, one line of JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from tests.support.fuzz_server import code
from tests.support.fuzzing import Finding, FuzzRun, fuzz
from tests.support.mutations import Batch, Case, Honest, batches, draw, simpler_batches

#: Findings that need the whole session (a fresh server, SIGTERM, the restart) to show.
WHOLE_SESSION = {"crash", "exit code", "left in spool", "honest game quarantined", "unreadable replay"}


class Owner:
    """What ``tests.support.processes.run_twistd`` asks of a test: cleanups."""

    def __init__(self) -> None:
        self.cleanups: list[Any] = []

    def addCleanup(self, function: Any, *args: Any) -> None:
        self.cleanups.append((function, args))

    @defer.inlineCallbacks
    def clean(self):
        cleanups, self.cleanups = self.cleanups, []
        for function, args in reversed(cleanups):
            with contextlib.suppress(Exception):
                yield function(*args)


def signature(finding: Finding) -> str:
    """What makes two findings the same bug, roughly: the kind and the first words."""
    words = finding.detail.split(":")[0].split()
    numberless = " ".join(w for w in words[:8] if not any(ch.isdigit() for ch in w))
    return f"{finding.kind}: {numberless}"


@defer.inlineCallbacks
def session(owner: Owner, directory: Path, batch_list: list[Batch], deadline: float, kill_at: float | None):
    """One server: the batches (until ``deadline``), SIGTERM (or, with
    ``kill_at``, SIGKILL that many seconds into the last batch), restart, checks."""
    run = FuzzRun(owner, directory)
    yield run.start()
    ran: list[Batch] = []
    for index, batch in enumerate(batch_list):
        if time.monotonic() >= deadline or run.server is None or not run.server.up:
            break
        last = index == len(batch_list) - 1 or time.monotonic() + 10 >= deadline
        before = len(run.findings)
        yield run.run_batch(batch, kill_at if last else None)
        ran.append(batch)
        for finding in run.findings[before:]:
            finding.batch = batch  # type: ignore[attr-defined]
        if run.server is None:  # killed
            break
    if run.server is not None:
        yield run.stop()
    yield run.restart_and_check()
    run.check_vault()
    yield owner.clean()
    return run, ran


@defer.inlineCallbacks
def reproduces(owner: Owner, root: Path, batch: Batch, kind: str, counter: list[int]):
    """Whether ``batch`` alone, on a fresh server, shows a finding of ``kind``."""
    counter[0] += 1
    directory = root / f"shrink{counter[0]}"
    directory.mkdir(parents=True)
    try:
        run = yield fuzz(owner, directory, [batch], restart=kind in WHOLE_SESSION or kind == "left in spool")
    finally:
        yield owner.clean()
        shutil.rmtree(directory, ignore_errors=True)
    return any(finding.kind == kind for finding in run.findings), run


@defer.inlineCallbacks
def shrink(owner: Owner, root: Path, finding: Finding, seconds: float):
    """The smallest batch still showing ``finding``'s kind that a greedy walk finds in ``seconds``."""
    deadline = time.monotonic() + seconds
    counter = [0]
    kind = finding.kind
    start: Batch = finding.batch  # type: ignore[attr-defined]
    subject = finding.subject
    # The case (or honest game) the finding names, alone, first.
    if isinstance(subject, Case):
        first = Batch((), (subject,))
    elif isinstance(subject, Honest):
        first = Batch((subject,), ())
    else:
        first = None
    if first is not None:
        found, _ = yield reproduces(owner, root, first, kind, counter)
        if found:
            start = first
    found, _ = yield reproduces(owner, root, start, kind, counter)
    if not found:
        return None, counter[0]
    current, progress = start, True
    while progress and time.monotonic() < deadline:
        progress = False
        for candidate in simpler_batches(current):
            if time.monotonic() >= deadline:
                break
            found, _ = yield reproduces(owner, root, candidate, kind, counter)
            if found:
                current, progress = candidate, True
                break
    return current, counter[0]


@defer.inlineCallbacks
def main(reactor: Any, argv: list[str]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="how long to generate batches")
    parser.add_argument("--seed", type=int, default=1, help="the first session's seed (then seed+1, ...)")
    parser.add_argument("--cases", type=int, default=16, help="fuzzed cases per batch")
    parser.add_argument("--honest", type=int, default=2, help="honest games per batch")
    parser.add_argument(
        "--session", type=int, default=20, help="batches per server (then SIGTERM and restart)"
    )
    parser.add_argument(
        "--kill-every",
        type=int,
        default=2,
        help="every Nth server is killed (SIGKILL) in its last batch; 0: never",
    )
    parser.add_argument("--no-shrink", action="store_true", help="report findings as found, unshrunk")
    parser.add_argument(
        "--shrink-minutes", type=float, default=4, help="time to shrink each distinct finding"
    )
    parser.add_argument("--keep", type=Path, help="keep every session's folder (vault, spool, logs) here")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="faf-replay-fuzz-"))
    root.mkdir(parents=True, exist_ok=True)
    owner = Owner()
    # Interrupted (SIGINT, SIGTERM): no twistd is left behind.
    reactor.addSystemEventTrigger("before", "shutdown", owner.clean)
    started = time.monotonic()
    deadline = started + args.minutes * 60
    totals: Counter[str] = Counter()
    findings: list[Finding] = []
    number = 0
    print(
        f"fuzzing for {args.minutes:g} min from seed {args.seed}: {args.honest} honest games and "
        f"{args.cases} fuzzed cases a batch, {args.session} batches a server; in {root}",
        flush=True,
    )
    while time.monotonic() < deadline:
        seed = args.seed + number
        batch_list = draw(batches(args.honest, args.cases), args.session + 1, seed)[1:]
        directory = root / f"session{number}"
        kill = args.kill_every and number % args.kill_every == args.kill_every - 1
        kill_at = random.Random(seed).uniform(0.2, 2.0) if kill else None
        run, ran = yield session(owner, directory, batch_list, deadline, kill_at)
        totals.update(run.stats)
        totals["sessions"] += 1
        for finding in run.findings:
            if not hasattr(finding, "batch"):
                finding.batch = ran[-1] if ran else batch_list[0]  # type: ignore[attr-defined]
        findings += run.findings
        kinds = Counter(f.kind for f in run.findings)
        print(
            f"session {number} (seed {seed}): {len(ran)} batches, {run.stats['cases']} cases, "
            f"{run.stats['connections']} connections, {run.stats['honest games verified']}/"
            f"{run.stats['honest games']} honest games verified, {run.stats['saved files']} files"
            f"{f', killed {kill_at:.2f} s into its last batch' if kill_at else ''}; longest stall: server "
            f"{max(server.log.longest_stall for server in run.servers):.0f} ms, clients "
            f"{run.harness_lag * 1000:.0f} ms; "
            f"findings: {dict(kinds) or 'none'}; {time.monotonic() - started:.0f} s",
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
        number += 1
    fuzz_seconds = time.monotonic() - started

    distinct: dict[str, Finding] = {}
    for finding in findings:
        distinct.setdefault(signature(finding), finding)
    print()
    print(
        f"tried {totals['cases']} fuzzed cases ({totals['connections']} connections) and "
        f"{totals['honest games']} honest games in {totals['batches']} batches on "
        f"{totals['sessions']} servers, "
        f"{fuzz_seconds / 60:.1f} min; {totals['saved files']} saved files checked, "
        f"{totals['quarantined']} quarantined"
    )
    categories = {
        "crashes (server died or SIGTERM exit code not 0)": ("crash", "exit code"),
        "tracebacks and critical lines": ("traceback", "critical", "foreign traceback"),
        "lost or wrong honest games": (
            "honest game lost",
            "honest game wrong",
            "watcher got other bytes",
            "watcher not closed",
            "honest game quarantined",
        ),
        "connections without a logged outcome": ("no logged outcome", "lobby leaver logged"),
        "leftovers after restart": ("left in spool",),
        "bad saved files": ("unreadable replay", "wrong metadata", "not one of the uploads"),
        "other": ("cannot connect", "harness error"),
    }
    by_kind = Counter(f.kind for f in findings)
    for label, kinds in categories.items():
        print(f"  {label}: {sum(by_kind[k] for k in kinds)}")
    print(f"  distinct findings: {len(distinct)}")

    shrunk: list[dict[str, Any]] = []
    for name, finding in distinct.items():
        print(f"\n== {name}\n{finding.report()}", flush=True)
        if args.no_shrink:
            continue
        smallest, tries = yield shrink(owner, root / "shrinking", finding, args.shrink_minutes * 60)
        if smallest is None:
            print(f"-- did not reproduce alone ({tries} tries)")
            continue
        print(f"-- smallest batch that still shows it ({tries} tries):\n{code(smallest)}", flush=True)
        shrunk.append({"finding": name, "smallest": code(smallest)})
    yield owner.clean()
    summary = {
        "seed": args.seed,
        "minutes": round(fuzz_seconds / 60, 2),
        "sessions": totals["sessions"],
        "batches": totals["batches"],
        "cases": totals["cases"],
        "connections": totals["connections"],
        "honest_games": totals["honest games"],
        "honest_games_verified": totals["honest games verified"],
        "saved_files": totals["saved files"],
        "quarantined": totals["quarantined"],
        "findings": dict(by_kind),
        "distinct": sorted(distinct),
        "shrunk": shrunk,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    task.react(main, (sys.argv[1:],))

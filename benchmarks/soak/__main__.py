"""``python -m benchmarks.soak --minutes N --seed S``: see the package's docstring."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.soak.plan import Scale, plan


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="minutes of arrivals and faults")
    parser.add_argument("--seed", type=int, default=None, help="the run's seed (default: drawn and printed)")
    parser.add_argument("--games", type=int, default=Scale.games, help="games running at once, on average")
    parser.add_argument("--compression", type=float, default=Scale.compression, help="game time / run time")
    parser.add_argument("--hostile-per-minute", type=float, default=Scale.hostile_per_minute)
    parser.add_argument("--report", help="write the report (JSON) here")
    parser.add_argument("--plot", help="write the flat-over-time plot (SVG) here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument(
        "--one-life",
        action="store_true",
        help="no kill, deploy or storm: one server life, to see its memory over a long run",
    )
    parser.add_argument(
        "--server-option", action="append", default=[], help="one more twistd faf-replay option"
    )
    parser.add_argument(
        "--refit",
        metavar="REPORT",
        help="fit the slopes of a report (JSON) again, and plot them; runs nothing",
    )
    parser.add_argument(
        "--from",
        dest="fit_from",
        type=float,
        metavar="SECONDS",
        help="with --refit: fit from this second of the run on (default: its last three quarters)",
    )
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--inside", help=argparse.SUPPRESS)  # the namespace it runs in
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1 << 31)
    return args


def outside(args: argparse.Namespace, argv: list[str]) -> int:
    """Make the private network namespace and run this again inside it."""
    from tests.support.netns import Namespace, Unavailable  # noqa: PLC0415

    try:
        namespace = Namespace.create()
    except Unavailable as error:
        sys.exit(f"the soak needs a network namespace of its own: {error}")
    workdir = Path(tempfile.mkdtemp(prefix="faf-replay-soak-"))
    try:
        command = [sys.executable, "-m", "benchmarks.soak", *argv, f"--seed={args.seed}"]
        command += [f"--workdir={workdir}", f"--inside={namespace.name}"]
        return subprocess.run(["ip", "netns", "exec", namespace.name, *command], check=False).returncode
    finally:
        namespace.delete()
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def inside(args: argparse.Namespace) -> int:
    from twisted.internet import task  # noqa: PLC0415

    from benchmarks.soak import flat, report  # noqa: PLC0415
    from benchmarks.soak.run import run  # noqa: PLC0415
    from tests.support.mutations import cases, draw  # noqa: PLC0415

    scale = Scale(args.games, args.compression, args.hostile_per_minute)
    the_plan = plan(args.minutes, args.seed, scale, one_life=args.one_life)
    print(report.planned(the_plan), flush=True)
    hostile = draw(cases(), len(the_plan.hostile), args.seed) if the_plan.hostile else []
    outcome: dict = {}

    def main(_reactor):
        running = run(the_plan, Path(args.workdir), args.server_option, hostile)
        running.addCallback(outcome.update)
        running.addErrback(lambda failure: failure.printTraceback(sys.stdout) or failure)
        return running

    try:
        task.react(main)
    except SystemExit as stopped:
        if stopped.code or not outcome:
            print("the soak itself failed (above)", flush=True)
            return 2
    samples = outcome.pop("samples")
    print(report.text(outcome))
    if args.plot:
        title = f"faf-replay soak, seed {args.seed}, {args.minutes:g} min"
        Path(args.plot).write_text(flat.plot(samples, the_plan.seconds, outcome["slopes"], title))
    if args.report:
        Path(args.report).write_text(json.dumps({**outcome, "samples": [vars(s) for s in samples]}, indent=1))
    print(json.dumps(outcome))
    return 0 if report.passed(outcome, strict_slopes=the_plan.judges_slopes) else 1


def refit(args: argparse.Namespace) -> int:
    """The slopes of a report again, with this checkout's fit; the load a report from before
    the sampler noted ``held_mib`` and ``sent_mib`` is given from its plan (``players.load_by_plan``),
    and one from before it noted uploads and watchers apart fits its ``connections`` (as the
    players counted them) as uploads: an approximation, said when it is used."""
    from benchmarks.soak import flat  # noqa: PLC0415
    from benchmarks.soak.players import load_by_plan  # noqa: PLC0415
    from benchmarks.soak.report import verdict  # noqa: PLC0415

    report = json.loads(Path(args.refit).read_text())
    settings = report["plan"]
    the_plan = plan(
        settings["minutes"],
        settings["seed"],
        Scale(settings["games_at_once"], settings["compression"]),
        one_life=settings.get("one_life", False),
    )
    samples, lumped = [], False
    for raw in report["samples"]:
        values = dict(raw["values"])
        if "sent_mib" not in values:
            held, sent = load_by_plan(the_plan, raw["at"], raw["at"] - raw["since_start"])
            values.setdefault("held_mib", held)
            values["sent_mib"] = sent
        if "uploads" not in values and "connections" in values:
            values["uploads"] = values.pop("connections")
            lumped = True
        samples.append(flat.Sample(raw["at"], raw["life"], raw["since_start"], values))
    if lumped:
        print("(an older report: its connections, uploads and watchers together, fitted as uploads)")
    busy = flat.backlogs([(kind, began, ended) for kind, began, ended, *_ in report["fault_log"]])
    fitted = flat.slopes(samples, the_plan.seconds, the_plan.settling, busy, start=args.fit_from)
    for name, slope in fitted.items():
        print(
            f"{name}: {slope['per_hour']} ± {slope['standard_error']} {slope['unit']} per hour"
            f" {verdict(slope)}"
        )
    if args.plot:
        title = f"faf-replay soak, seed {settings['seed']}, {settings['minutes']:g} min"
        Path(args.plot).write_text(flat.plot(samples, the_plan.seconds, fitted, title))
    print(json.dumps(fitted))
    return 0


def main() -> int:
    argv = sys.argv[1:]
    args = arguments(argv)
    if args.refit:
        return refit(args)
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        sys.exit("the soak needs root (a network namespace, nftables, tmpfs mounts)")
    return outside(args, argv)  # its --seed= comes last: the one argparse keeps


if __name__ == "__main__":
    sys.exit(main())

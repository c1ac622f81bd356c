"""``python -m benchmarks.load <scenario>``: the command line (see the package)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from benchmarks.load.capacity import capacity
from benchmarks.load.crowd import watchers
from benchmarks.load.generator import generator
from benchmarks.load.idle import idle
from benchmarks.load.plans import GeneratorSpec
from benchmarks.load.report import table
from benchmarks.load.server import WORKDIRS


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
        print(json.dumps(generator(GeneratorSpec.from_json(sys.stdin.read()))))
        return
    run = {"capacity": capacity, "cost": capacity, "idle": idle, "watchers": watchers}[args.command]
    if getattr(args, "compare", False):
        from benchmarks.compare import compare  # noqa: PLC0415

        figures = compare(args, run, table)
    else:
        figures = run(args)
        print(table(figures))
    if args.keep:
        print("kept: " + " ".join(str(path) for path in WORKDIRS))
    else:
        for path in WORKDIRS:
            shutil.rmtree(path, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""One load, one machine, one invocation: faf-replay against its floor and the anchors.

    .venv/bin/python -m benchmarks.load cost --compare --mariadb \
        --rust-anchor /work/anchors/rust-src/target/release/faf_rust_replayserver \
        [--anchor-path /work/anchors/aio]

Runs the load benchmark's games (the same plan, so the same bytes) against,
in turn: faf-replay with its defaults (zstd 10, or ``--zstd-level``),
faf-replay at zstd 19 (the asyncio anchor's level), the floor reading once a
tick, the floor reading every write, the Rust server FAF runs today when
``--rust-anchor`` gives its binary (at the same zstd level as faf-replay),
faf-replay from another checkout when ``--before`` gives one (the code before a
change: the cost of a change, measured in one run), and the asyncio anchor when
``--anchor-path`` gives it (repeated: each checkout in turn, the first one named
"anchor", the one the ratios use). Each run
prints its own table as it ends; then one table of CPU per phase, one of
memory, save latency to the database row and watcher timing, and the ratios
the issues set targets for. Ratios between runs of one invocation are what
this is for: figures from different days or machines do not compare (this
machine's CPU time varies by a factor of four between days). ``--profile``
and ``--plot`` are not used here: py-spy would cost the profiled run CPU that
the others do not pay.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

#: (numerator run, its phase, denominator run, its phase, the target the issues set or None)
RATIOS = [
    ("faf-replay", "total", "rust", "total", 1.0),
    ("faf-replay", "total", "faf-replay before", "total", None),
    ("faf-replay", "streaming", "faf-replay before", "streaming", None),
    ("faf-replay", "saving", "faf-replay before", "saving", None),
    ("faf-replay", "streaming", "rust", "streaming", None),
    ("faf-replay", "saving", "rust", "saving", None),
    ("faf-replay", "streaming", "floor", "streaming", 2.0),
    ("faf-replay", "total", "anchor", "total", 1 / 8),
    ("faf-replay", "streaming", "floor-every-write", "streaming", None),
    ("faf-replay", "saving", "anchor", "saving", None),
    ("faf-replay zstd 19", "total", "anchor", "total", None),
    ("faf-replay zstd 19", "saving", "anchor", "saving", None),
    ("rust", "streaming", "floor", "streaming", None),
    ("anchor", "streaming", "floor", "streaming", None),
    ("floor-every-write", "streaming", "floor", "streaming", None),
]

#: Figures of faf-replay's run that must be at most the Rust server's (issue 20).
AT_MOST_RUST = (
    "rss_peak_mib",
    "row_latency_median_s",
    "row_latency_p99_s",
    "watcher_first_byte_median_s",
    "watcher_first_byte_p99_s",
    "watcher_behind_the_delay_median_s",
    "watcher_behind_the_delay_p99_s",
)
#: Figures shown beside them, without a target.
SHOWN = ("rss_steady_mib", "watcher_behind_the_delay_min_s", "save_latency_median_s", "save_latency_p99_s")

PHASES = ("streaming", "saving", "total")


def variants(args) -> list[tuple[str, dict]]:
    """The runs: a name and what differs from the command line's arguments."""
    runs = [("faf-replay", {"kind": "faf-replay"})]
    if getattr(args, "before", None):
        runs.append(("faf-replay before", {"kind": "faf-replay", "checkout": args.before}))
    if args.zstd_level != 19:
        runs.append(("faf-replay zstd 19", {"kind": "faf-replay", "zstd_level": 19}))
    runs += [("floor", {"kind": "floor"}), ("floor-every-write", {"kind": "floor-every-write"})]
    if getattr(args, "rust_anchor", None):
        runs.append(("rust", {"kind": "rust"}))
    for n, path in enumerate(args.anchor_path or []):
        name = "anchor" if n == 0 else f"anchor {Path(path).name}"
        runs.append((name, {"kind": "anchor", "anchor_path": [path]}))
    return runs


def ratios(cpu: dict[str, dict[str, float]]) -> list[dict]:
    """The ratios of ``RATIOS`` between the runs that took place, with their targets and verdicts."""
    rows = []
    for top, top_phase, bottom, bottom_phase, target in RATIOS:
        if top not in cpu or bottom not in cpu or not cpu[bottom][bottom_phase]:
            continue
        value = cpu[top][top_phase] / cpu[bottom][bottom_phase]
        rows.append(
            {
                "ratio": f"{top} {top_phase} / {bottom} {bottom_phase}",
                "value": round(value, 3),
                "target": None if target is None else round(target, 3),
                "met": None if target is None else value <= target,
            }
        )
    return rows


def against_rust(runs: dict[str, dict]) -> list[dict]:
    """faf-replay's figures beside the Rust server's, each that has a target checked."""
    if "faf-replay" not in runs or "rust" not in runs:
        return []
    rows = []
    for key in (*AT_MOST_RUST, *SHOWN):
        ours, theirs = runs["faf-replay"].get(key), runs["rust"].get(key)
        if ours is None or theirs is None:
            continue
        target = key in AT_MOST_RUST
        rows.append(
            {"figure": key, "faf-replay": ours, "rust": theirs, "met": ours <= theirs if target else None}
        )
    return rows


def figures_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    width = max(len(row["figure"]) for row in rows)
    lines = [f"{'figure':<{width}}  {'faf-replay':>10}  {'rust':>10}"]
    for row in rows:
        verdict = "" if row["met"] is None else f"  at most rust's: {'met' if row['met'] else 'MISSED'}"
        lines.append(f"{row['figure']:<{width}}  {row['faf-replay']:>10}  {row['rust']:>10}{verdict}")
    return "\n".join(lines)


def comparison_table(runs: dict[str, dict], rows: list[dict]) -> str:
    """The runs' CPU by phase and what they verified, then the ratios."""
    width = max(len(name) for name in runs)
    lines = [f"{'server':<{width}}  streaming  saving   total  saved/verified  watchers complete/exact"]
    for name, figures in runs.items():
        cpu = figures["server_cpu_seconds"]
        saved = "-" if figures["saved"] is None else f"{figures['saved']}/{figures['verified']}"
        watchers = f"{figures['watchers_complete']}/{figures['watchers_verified']} of {figures['watchers']}"
        lines.append(
            f"{name:<{width}}  {cpu['streaming']:9.2f}  {cpu['saving']:6.2f}  {cpu['total']:6.2f}"
            f"  {saved:>14}  {watchers}"
        )
    lines.append("")
    ratio_width = max((len(row["ratio"]) for row in rows), default=5)
    for row in rows:
        lines.append(f"{row['ratio']:<{ratio_width}}  {row['value']:7.3f}{_verdict(row)}")
    return "\n".join(lines)


def _verdict(row: dict) -> str:
    if row["target"] is None:
        return ""
    return f"  target <= {row['target']}: {'met' if row['met'] else 'MISSED'}"


def machine() -> dict:
    """The CPU model and count, as lscpu names them."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {"cpu_model": model, "cpus": os.cpu_count()}


def settle() -> list[float]:
    """Let the previous run's writes reach the disk, so that they are not the next run's to wait for."""
    os.sync()
    time.sleep(10)
    return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]


def compare(args, run: Callable[[argparse.Namespace], dict], table: Callable[[dict], str]) -> dict:
    """Every variant with the same games, one after the other; the figures and the ratios."""
    runs: dict[str, dict] = {}
    for name, overrides in variants(args):
        load = settle()
        print(f"== {name} (load average {load[0]:.2f})", flush=True)
        figures = run(argparse.Namespace(**{**vars(args), **overrides, "profile": None, "plot": None}))
        figures["load_average_before"] = load
        runs[name] = figures
        print(table(figures), flush=True)
    rows = ratios({name: figures["server_cpu_seconds"] for name, figures in runs.items()})
    beside = against_rust(runs)
    print("\n" + comparison_table(runs, rows) + "\n\n" + figures_table(beside), flush=True)
    return {"machine": machine(), "runs": runs, "ratios": rows, "against_rust": beside}

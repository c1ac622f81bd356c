"""Flat over time: the server's resident memory, descriptors, threads, spool size and reactor
lag, sampled through the run, and their slope over its last three quarters, with a plot.

A kill or a deploy starts a new process, whose memory starts low again: a slope fitted across
lives would read the restarts as a trend. So the slope is fitted within lives: each life's
samples are centred on their own means (a regression with one intercept per life, one shared
slope). A new life starts with none of the games its predecessor held (FA does not reconnect):
its load climbs for minutes, in connections and in the bytes its games hold, until it holds
games of every age; and the resident memory of a process keeps its high-water mark (freed
memory mostly stays mapped), so a climb leaves a step that no later load explains. So each
life's first minutes are left out (``warm_up``: the plan's longest game, ``Plan.settling``),
and the slope is the one at constant load: the load is a variable of the regression too
(:data:`LOAD`), and what is reported is the change with time alone. The resident memory is a
high-water mark: it follows the highest load its life has had so far, not the load now (a quiet
minute after a busy one frees memory that stays mapped), so its slope is taken at a constant
*highest* load (:data:`HIGH_WATER`): growth while the life's busiest moment stays the busiest is
what a leak looks like. Beside it the Python allocator's live blocks (``heap_kblocks``), which
fall when memory is freed: the series that tells a leak from a high-water mark, taken at the
load now. Pure arithmetic, no Twisted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

#: The sample values the slopes hold constant: the players' uploads and watchers connected
#: (apart: an upload holds two descriptors, its socket and its spool file, a watcher one, and
#: the mix changes as a life's games age), the body bytes the running games hold (a game's
#: merged body grows as it goes, so a life's memory climbs while its games are young even at a
#: constant number of them), and the bytes their uploads sent (what the spool holds: a game of
#: 8 spools 8 copies, a duel 2).
LOAD = ("uploads", "watchers", "held_mib", "sent_mib")
#: Series that keep their high-water mark: fitted against each load's highest value in the
#: life so far rather than its value now.
HIGH_WATER = ("rss_mib",)
#: Faults whose backlog (saves waiting for the database or the vault, uploads waiting for the
#: spool's room) is not the steady load, and seconds after each whose samples are not fitted
#: either: the backlog clears (the end of the run checks it all did), it does not pile up.
BACKLOG_FAULTS = ("db-kill", "db-hang", "spool-full", "vault-full")
SETTLE = 60.0
#: Seconds after a start whose samples are not fitted, unless the caller says (the recovery
#: and the first games).
WARM_UP = 30.0
#: Seconds of a life before a series is fitted, where longer than the warm-up. The resident
#: memory needs about 25 minutes of a life at the hour's load to settle: in the one-life hour
#: (docs/benchmarks.md, "Chaos soak") it rose 13 MiB in the first 15 minutes and a little more
#: until the life's busiest moment at 26 minutes, with what the C allocator held in use flat
#: (26-30 MiB) and what it held free rising (4 to 13 MiB): its heaps fragmenting to their
#: working shape, not a leak (the live blocks and the bytes in use, which would show one, are
#: fitted from the warm-up on). From 27 minutes on it moved +0.3 MiB/h. Fitted earlier, that
#: settling reads as growth; so its slope is the one after it. The plan leaves the run's last
#: 45 minutes to one life for this (``plan.RESTARTS_UNTIL``).
SERIES_WARM_UP = {"rss_mib": 1500.0}
#: The series, their unit, and the largest slope (per hour, at the soak's ~4,400 games an hour)
#: still called flat. FAF saves 10^3-10^4 replays a day, so an hour here is 10 hours or more of
#: FAF's busiest days; the bounds are what a month at 10^4 games a day (300,000 games) can
#: afford: memory under 1 KiB a game (4 MiB/h: 280 MiB a month), a descriptor for fewer than
#: one game in 150 (30/h: 2,000 a month, a tenth of a limit of 20,000; the count moves with
#: every connection, so a bound much finer than this is below what an hour can measure), not
#: one thread more, the spool
#: not growing by an upload (40 KB) for every 40 games (4 MiB/h; at the end it must be empty
#: anyway), the reactor's mean lag not 2 ms worse an hour; the live Python blocks (~64 bytes
#: each) under 16 a game (64,000/h: a leaked game holds hundreds, so one game in ten leaking
#: is well over); what the C allocator holds in use (Python's big objects and the C libraries'),
#: the bound of the resident memory, taken at the load now like the live blocks: a leak outside
#: Python's small objects. What it holds free inside its heaps (fragmentation: the resident
#: memory's creep with nothing in use growing) is fitted and shown, not judged (no bound): the
#: resident memory it is part of is. docs/benchmarks.md, "Chaos soak".
SERIES: dict[str, tuple[str, float | None]] = {
    "rss_mib": ("MiB", 4.0),
    "heap_kblocks": ("thousand blocks", 64.0),
    "c_in_use_mib": ("MiB", 4.0),
    "c_free_mib": ("MiB", None),
    "fds": ("descriptors", 30.0),
    "threads": ("threads", 1.0),
    "spool_mib": ("MiB", 4.0),
    "lag_ms": ("ms", 2.0),
}


@dataclass(frozen=True)
class Sample:
    at: float  # seconds into the run
    life: int  # which life of the server (1: the first start)
    since_start: float  # seconds since that life began
    values: dict[str, float]


def fit(
    samples: list[Sample],
    name: str,
    window_start: float,
    window_end: float = float("inf"),
    *,
    warm_up: float = WARM_UP,
    busy: tuple[tuple[float, float], ...] = (),
) -> tuple[float, float] | None:
    """Units per hour of ``name`` over samples from ``window_start`` to ``window_end``, fitted
    within lives, at constant load (every one of :data:`LOAD` the samples have; for a
    :data:`HIGH_WATER` series, at a constant highest load so far); and the
    slope's standard error (units per hour). Samples inside a ``busy`` span (seconds into the
    run) are left out. None without enough samples."""
    lives: dict[int, list[list[float]]] = {}
    highest: dict[int, list[float]] = {}  # each life's highest load so far, for HIGH_WATER
    for sample in sorted(samples, key=lambda sample: sample.at):
        load = [sample.values.get(variable, 0.0) for variable in LOAD]
        if name in HIGH_WATER:
            so_far = highest.setdefault(sample.life, load)
            load = highest[sample.life] = [max(a, b) for a, b in zip(so_far, load, strict=True)]
        value = sample.values.get(name)
        inside = window_start <= sample.at <= window_end
        inside = inside and not any(start <= sample.at <= end for start, end in busy)
        if inside and sample.since_start >= warm_up and value is not None:
            lives.setdefault(sample.life, []).append([sample.at, *load, value])
    centred: list[list[float]] = []
    fitted_lives = 0
    for rows in lives.values():
        if len(rows) < 3:
            continue
        fitted_lives += 1
        means = [sum(column) / len(rows) for column in zip(*rows, strict=True)]
        centred += [[x - m for x, m in zip(row, means, strict=True)] for row in rows]
    if not centred or not sum(row[0] ** 2 for row in centred):
        return None
    # The load variables that vary at all, then least squares by the normal equations.
    width = len(LOAD) + 1
    used = [0] + [i for i in range(1, width) if sum(row[i] ** 2 for row in centred) > 0]
    xs = [[row[i] for i in used] for row in centred]
    ys = [row[-1] for row in centred]
    normal = [[sum(x[i] * x[j] for x in xs) for j in range(len(used))] for i in range(len(used))]
    inverse = _inverse(normal)
    if inverse is None:  # a load moving with time alone: the time slope by itself
        xs, inverse = [[x[0]] for x in xs], [[1 / normal[0][0]]]
    right = [sum(x[i] * y for x, y in zip(xs, ys, strict=True)) for i in range(len(inverse))]
    beta = [sum(inverse[i][j] * right[j] for j in range(len(right))) for i in range(len(right))]
    residuals = sum(
        (y - sum(b * v for b, v in zip(beta, x, strict=True))) ** 2 for x, y in zip(xs, ys, strict=True)
    )
    freedom = len(xs) - fitted_lives - len(beta)
    error = math.sqrt(residuals / freedom * inverse[0][0]) if freedom > 0 else float("inf")
    return beta[0] * 3600, error * 3600


def _inverse(matrix: list[list[float]]) -> list[list[float]] | None:
    """Gauss-Jordan with partial pivoting; None for a (nearly) singular matrix."""
    n = len(matrix)
    work = [[*row, *(1.0 if i == j else 0.0 for j in range(n))] for i, row in enumerate(matrix)]
    scale = max(abs(v) for row in matrix for v in row) or 1.0
    for column in range(n):
        pivot = max(range(column, n), key=lambda r: abs(work[r][column]))
        if abs(work[pivot][column]) < 1e-12 * scale:
            return None
        work[column], work[pivot] = work[pivot], work[column]
        lead = work[column][column]
        work[column] = [v / lead for v in work[column]]
        for r in range(n):
            if r != column and work[r][column]:
                factor = work[r][column]
                work[r] = [a - factor * b for a, b in zip(work[r], work[column], strict=True)]
    return [row[n:] for row in work]


def slope_within_lives(
    samples: list[Sample], name: str, window_start: float, window_end: float = float("inf")
) -> float | None:
    """Units per hour (see :func:`fit`)."""
    fitted = fit(samples, name, window_start, window_end)
    return None if fitted is None else fitted[0]


def backlogs(faults: list[tuple[str, float, float]]) -> tuple[tuple[float, float], ...]:
    """The spans (seconds into the run) of the :data:`BACKLOG_FAULTS` among ``(kind, began,
    ended)``, each with :data:`SETTLE` seconds after it."""
    return tuple((began, ended + SETTLE) for kind, began, ended in faults if kind in BACKLOG_FAULTS)


def slopes(
    samples: list[Sample],
    seconds: float,
    warm_up: float = WARM_UP,
    busy: tuple[tuple[float, float], ...] = (),
    *,
    start: float | None = None,
    series_warm_up: dict[str, float] | None = None,
) -> dict[str, dict]:
    """Every series' slope over the last three quarters of a run of ``seconds`` (its arrivals;
    not the drain after them, when the load falls), or from ``start`` on, each life's first
    ``warm_up`` seconds (or its ``series_warm_up``, :data:`SERIES_WARM_UP` unless given, where longer) and
    the ``busy`` spans left out, its bound, and whether it stays under it (a falling slope is
    flat; no slope, for want of settled samples, is not); and the slope with the busy spans
    in, for the record."""
    out = {}
    start = seconds / 4 if start is None else start
    series_warm_up = SERIES_WARM_UP if series_warm_up is None else series_warm_up
    for name, (unit, bound) in SERIES.items():
        skipped = max(warm_up, series_warm_up.get(name, 0.0))
        fitted = fit(samples, name, start, seconds, warm_up=skipped, busy=busy)
        everything = fit(samples, name, start, seconds, warm_up=skipped)
        slope = None if fitted is None else fitted[0]
        out[name] = {
            "per_hour": None if slope is None else round(slope, 3),
            "standard_error": None if fitted is None else round(fitted[1], 3),
            "with_backlogs_per_hour": None if everything is None else round(everything[0], 3),
            "unit": unit,
            "bound_per_hour": bound,
            # Flat means not growing: a series that falls at a constant load is bounded (by
            # zero, and by what the life started with) and holds nothing back; what a month
            # cannot afford is growth (docs/benchmarks.md, "Chaos soak").
            "flat": None if bound is None else slope is not None and slope <= bound,
            "warm_up_seconds": skipped,
        }
    return out


def plot(samples: list[Sample], seconds: float, fitted: dict[str, dict], title: str) -> str:
    """An SVG: one panel per series over the run, restarts as grey lines, the fitted window shaded."""
    width, panel, left, gap = 900, 120, 70, 30
    height = 40 + len(SERIES) * (panel + gap)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif"'
        ' font-size="11">',
        f'<text x="{left}" y="20" font-size="14">{escape(title)}</text>',
    ]
    span = max(seconds, max((s.at for s in samples), default=1.0))
    plot_width = width - left - 20

    def x(at: float) -> float:
        return left + plot_width * at / span

    starts = [s.at - s.since_start for s in samples if s.life > 1]
    restarts = sorted({round(at, 1) for at in starts})
    for index, (name, (unit, _)) in enumerate(SERIES.items()):
        top = 40 + index * (panel + gap)
        points = [(s.at, s.values[name]) for s in samples if s.values.get(name) is not None]
        high = max((v for _, v in points), default=1.0) or 1.0
        low = min(0.0, min((v for _, v in points), default=0.0))

        def y(value: float, top: float = top, high: float = high, low: float = low) -> float:
            return top + panel - panel * (value - low) / (high - low or 1.0)

        parts.append(
            f'<rect x="{x(seconds / 4):.1f}" y="{top}" width="{x(seconds) - x(seconds / 4):.1f}"'
            f' height="{panel}"'
            ' fill="#eef4ff"/>'
        )
        for at in restarts:
            parts.append(
                f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{top}" y2="{top + panel}" stroke="#bbb"/>'
            )
        slope = fitted[name]["per_hour"]
        label = f"{name} ({unit}); slope {'n/a' if slope is None else f'{slope:+.2f}'} per hour"
        parts.append(f'<text x="{left}" y="{top - 4}">{escape(label)}</text>')
        parts.append(f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{high:.4g}</text>')
        parts.append(f'<text x="{left - 6}" y="{top + panel}" text-anchor="end">{low:.4g}</text>')
        if points:
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points if math.isfinite(v))
            parts.append(f'<polyline points="{path}" fill="none" stroke="#2a6fdb" stroke-width="1"/>')
    parts.append(
        f'<text x="{left}" y="{height - 6}">seconds into the run (0 to {span:.0f});'
        " shaded: the fitted window;"
        " grey: restarts</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)

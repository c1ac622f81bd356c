"""Flat over time: the server's resident memory, descriptors, threads, spool size and reactor
lag, sampled through the run, and their slope over its last three quarters, with a plot.

A kill or a deploy starts a new process, whose memory starts low again: a slope fitted across
lives would read the restarts as a trend. So the slope is fitted within lives: each life's
samples are centred on their own means (a regression with one intercept per life, one shared
slope), and the first :data:`WARM_UP` seconds of each life are left out. And a new life starts
with none of the games its predecessor held (FA does not reconnect): its load climbs for
minutes. So the slope is the one at constant load: the players' open connections are a second
variable of the regression, and what is reported is the change with time alone. Pure
arithmetic, no Twisted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

#: The sample value the slopes hold constant: the players' connections open.
LOAD = "connections"
#: Seconds after a start whose samples are not fitted (the recovery and the first games).
WARM_UP = 30.0
#: The series, their unit, and the largest slope (per hour) still called flat. Why these: see
#: docs/benchmarks.md, "Chaos soak".
SERIES = {
    "rss_mib": ("MiB", 8.0),
    "fds": ("descriptors", 50.0),
    "threads": ("threads", 1.0),
    "spool_mib": ("MiB", 8.0),
    "lag_ms": ("ms", 5.0),
}


@dataclass(frozen=True)
class Sample:
    at: float  # seconds into the run
    life: int  # which life of the server (1: the first start)
    since_start: float  # seconds since that life began
    values: dict[str, float]


def fit(
    samples: list[Sample], name: str, window_start: float, window_end: float = float("inf")
) -> tuple[float, float] | None:
    """Units per hour of ``name`` over samples from ``window_start`` to ``window_end``, fitted
    within lives, at constant load (``connections``) where the samples have it; and the
    slope's standard error (units per hour). None without enough samples."""
    lives: dict[int, list[tuple[float, float, float]]] = {}
    for sample in samples:
        value = sample.values.get(name)
        inside = window_start <= sample.at <= window_end
        if inside and sample.since_start >= WARM_UP and value is not None:
            load = sample.values.get(LOAD, 0.0)
            lives.setdefault(sample.life, []).append((sample.at, load, value))
    centred, fitted_lives = [], 0
    for points in lives.values():
        if len(points) < 3:
            continue
        fitted_lives += 1
        mean_t, mean_l, mean_y = (sum(p[i] for p in points) / len(points) for i in range(3))
        centred += [(at - mean_t, load - mean_l, value - mean_y) for at, load, value in points]
    stt = sum(t * t for t, _, _ in centred)
    if not stt:
        return None
    stl = sum(t * c for t, c, _ in centred)
    sll = sum(c * c for _, c, _ in centred)
    sty = sum(t * y for t, _, y in centred)
    sly = sum(c * y for _, c, y in centred)
    determinant = stt * sll - stl * stl
    if sll == 0 or abs(determinant) < 1e-9 * stt * sll:  # no load, or load moving with time alone
        slope, per_load, variance_factor = sty / stt, 0.0, 1 / stt
    else:
        slope = (sty * sll - sly * stl) / determinant
        per_load = (sly * stt - sty * stl) / determinant
        variance_factor = sll / determinant
    residuals = sum((y - slope * t - per_load * c) ** 2 for t, c, y in centred)
    freedom = len(centred) - fitted_lives - 2
    error = math.sqrt(residuals / freedom * variance_factor) if freedom > 0 else float("inf")
    return slope * 3600, error * 3600


def slope_within_lives(
    samples: list[Sample], name: str, window_start: float, window_end: float = float("inf")
) -> float | None:
    """Units per hour (see :func:`fit`)."""
    fitted = fit(samples, name, window_start, window_end)
    return None if fitted is None else fitted[0]


def slopes(samples: list[Sample], seconds: float) -> dict[str, dict]:
    """Every series' slope over the last three quarters of a run of ``seconds`` (its arrivals;
    not the drain after them, when the load falls), its bound, and whether it is within it."""
    out = {}
    for name, (unit, bound) in SERIES.items():
        fitted = fit(samples, name, seconds / 4, seconds)
        slope = None if fitted is None else fitted[0]
        out[name] = {
            "per_hour": None if slope is None else round(slope, 3),
            "standard_error": None if fitted is None else round(fitted[1], 3),
            "unit": unit,
            "bound_per_hour": bound,
            "flat": slope is not None and abs(slope) <= bound,
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
            f'<rect x="{x(seconds / 4):.1f}" y="{top}" width="{x(span) - x(seconds / 4):.1f}"'
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

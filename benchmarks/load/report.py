"""The figures as a table, and CPU and memory over time as a plot."""

from __future__ import annotations

from benchmarks.load.server import Sampler, Server


def table(figures: dict) -> str:
    width = max(len(k) for k in figures)
    lines = []
    for key, value in figures.items():
        shown = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def plot(sampler: Sampler, path: str) -> None:
    import matplotlib  # noqa: PLC0415 - optional

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    t0 = sampler.samples[0][0]
    times = [s[0] - t0 for s in sampler.samples]
    cpu = [0.0] + [
        (b[1] - a[1]) / max(b[0] - a[0], 1e-6)
        for a, b in zip(sampler.samples, sampler.samples[1:], strict=False)
    ]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    top.plot(times, cpu)
    top.set_ylabel("server CPU (cores)")
    bottom.plot(times, [s[2] / 2**20 for s in sampler.samples])
    bottom.set_ylabel("server RSS (MiB)")
    bottom.set_xlabel("seconds")
    for name, at in sampler.marks.items():
        for axis in (top, bottom):
            axis.axvline(at - t0, color="grey", linestyle=":")
        top.annotate(name, (at - t0, 0), fontsize=7, rotation=90)
    fig.tight_layout()
    fig.savefig(path)


def rounded(value: float | None, digits: int) -> float | int | None:
    """A metric rounded, or None where the server has no such metric."""
    if value is None:
        return None
    return int(value) if digits == 0 else round(value, digits)


def stalls_over(server: Server, bucket: str) -> float:
    """How many probes found the reactor later than ``bucket`` seconds."""
    total = server.metric("replayserver_reactor_lag_seconds_count")
    within = server.metric(f'replayserver_reactor_lag_seconds_bucket{{le="{bucket}"}}')
    return total - within

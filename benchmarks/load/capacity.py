"""The capacity and cost scenarios: many games streaming at once, saved, verified."""

from __future__ import annotations

import os
import statistics
import time

from benchmarks.load.generator import run_generators
from benchmarks.load.plans import GeneratorSpec, plan_games
from benchmarks.load.report import plot, rounded
from benchmarks.load.server import Sampler, start_profiler, start_server
from benchmarks.load.verify import percentile, row_latencies, save_latencies, verify, watcher_timing


def capacity(args) -> dict:
    games = plan_games(args)
    server, rows = start_server(args, games)
    sampler = Sampler(server)
    profiler = start_profiler(server.process.pid, args.profile) if args.profile else None
    if rows is not None:
        rows.watch()
    sampler.mark("start")
    baseline, _ = server.memory()
    start_at = time.time() + args.ramp
    slices = [games[i :: args.generators] for i in range(args.generators)]
    specs = [
        GeneratorSpec(
            host="127.0.0.1",
            port=server.game_port,
            games=tuple(part),
            start_at=start_at,
            interval=0.1,
            rate=args.rate,
            acceleration=args.acceleration,
            timeout=args.timeout,
        )
        for part in slices
    ]
    results = run_generators(specs, sampler)
    last_upload = max((u["closed_at"] or 0) for r in results for u in r["uploads"])
    sampler.marks["uploads ended"] = last_upload
    sampler.sample()
    outcome = verify(server, games, results, timeout=args.grace + 60)
    if rows is not None:
        deadline = time.time() + 60
        while rows.recorded() < outcome["saved"] and time.time() < deadline:
            time.sleep(0.5)
        outcome["database_rows_updated"] = rows.recorded()
    sampler.mark("saved")
    row_latency = []
    if rows is not None:
        time.sleep(0.2)  # one more look of the row watcher at the rows counted above
        rows.stop_watching()
        row_latency = row_latencies(results, rows.available_at)
    stall = server.metric("replayserver_reactor_lag_max_seconds")
    _, peak = server.memory()
    received = server.metric("replayserver_received_bytes_total")
    sent = server.metric("replayserver_sent_bytes_total")
    exit_code = server.stop()
    if profiler is not None:
        profiler.wait(60)
    latencies = save_latencies(server)
    steady = [s[2] for s in sampler.samples if start_at + 5 <= s[0] <= sampler.marks["uploads ended"]]
    connections = args.games * (args.uploaders + args.watchers)
    figures = {
        "server": server.kind,
        **{f"server_{key}": value for key, value in server.describe().items()},
        "machine_cpus": os.cpu_count(),
        "games": args.games,
        "connections": connections,
        "server_cpu_seconds": {
            "streaming": round(sampler.cpu_between("start", "uploads ended"), 2),
            "saving": round(sampler.cpu_between("uploads ended", "saved"), 2),
            "total": round(sampler.cpu_between("start", "saved"), 2),
        },
        "streaming_seconds": round(sampler.marks["uploads ended"] - start_at, 1),
        "generators_cpu_seconds": round(sum(r["cpu"] for r in results), 2),
        "rss_peak_mib": round(peak / 2**20, 1),
        "rss_steady_mib": round(statistics.median(steady) / 2**20, 1) if steady else None,
        "rss_baseline_mib": round(baseline / 2**20, 1),
        "rss_per_connection_kib": (
            round((statistics.median(steady) - baseline) / connections / 1024, 1) if steady else None
        ),
        "bytes_in": rounded(received, 0),
        "bytes_out": rounded(sent, 0),
        **outcome,
        "save_latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
        "save_latency_p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "row_latency_median_s": round(statistics.median(row_latency), 3) if row_latency else None,
        "row_latency_p99_s": round(percentile(row_latency, 0.99), 3) if row_latency else None,
        **watcher_timing(results, start_at, args.rate if args.acceleration is None else None, args.delay),
        "longest_reactor_stall_s": rounded(stall, 4),
        "server_exit": exit_code,
    }
    if args.plot:
        plot(sampler, args.plot)
    return figures

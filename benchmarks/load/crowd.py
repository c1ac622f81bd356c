"""The watcher-crowd scenario: hundreds of watchers of one long game."""

from __future__ import annotations

import hashlib
import os
import selectors
import socket
import time

from benchmarks.load.report import stalls_over
from benchmarks.load.server import Server, new_workdir
from benchmarks.load.streams import make_stream


def watchers(args) -> dict:
    """A long game (all of it visible, its uploaders still connected), a crowd
    of watchers joining at once; then the uploaders leave and the game is
    saved: its save's CPU, time and the reactor's stalls meanwhile; then the
    same crowd again for the ended game, served from the vault."""
    workdir = new_workdir()
    server = Server(
        workdir, ["--delay=0", "--sample-interval=0.1", "--grace=1", f"--zstd-level={args.zstd_level}"]
    )
    stream = make_stream(args.recording, args.size, vary=True)
    uploaders = [socket.create_connection(("127.0.0.1", server.game_port)) for _ in range(args.uploaders)]
    for n, sock in enumerate(uploaders):
        sock.sendall(f"P/7/u{n}.SCFAreplay\0".encode() + stream)
    time.sleep(3)  # merged and visible
    before, _ = server.memory()
    elapsed, cpu, good, peak, total, crowd = _crowd(server, stream, args.watchers)
    storm_stall = server.metric("replayserver_reactor_lag_max_seconds")
    for sock in crowd:
        sock.close()
    # the save: every uploader leaves; the grace period (1 s) ends the game
    stalls_before = stalls_over(server, "0.05")
    cpu_before_save = server.cpu()
    for sock in uploaders:
        sock.close()
    from faf_replay.save.vault import vault_path  # noqa: PLC0415

    path = vault_path(workdir / "replays", 7)
    deadline = time.time() + 120
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    save_cpu = server.cpu() - cpu_before_save
    stalls_during_save = stalls_over(server, "0.05") - stalls_before
    # the same crowd for the game that has ended: served from the vault
    ended_before, _ = server.memory()
    ended = _crowd(server, stream, args.watchers)
    for sock in ended[5]:
        sock.close()
    server.stop()
    import fafreplay  # noqa: PLC0415

    with path.open("rb") as file:
        saved_ok = fafreplay.extract_scfa(file) == stream
    save_seconds = next(
        (e["elapsed"] for e in server.events() if e.get("game_id") == 7 and "elapsed" in e), None
    )
    return {
        "machine_cpus": os.cpu_count(),
        "watchers": args.watchers,
        "replay_bytes": len(stream),
        "seconds": round(elapsed, 2),
        "aggregate_mb_per_s": round(total / elapsed / 1e6, 1),
        "watchers_verified": good,
        "server_cpu_seconds": round(cpu, 2),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_peak_mib": round(peak / 2**20, 1),
        "longest_reactor_stall_s": round(storm_stall, 4),
        "zstd_level": args.zstd_level,
        "saved_file_bytes": path.stat().st_size,
        "saved_verified": saved_ok,
        "save_seconds": round(save_seconds, 3) if save_seconds is not None else None,
        "save_phase_cpu_seconds": round(save_cpu, 2),
        "stalls_over_50ms_while_saving": int(stalls_during_save),
        "ended_seconds": round(ended[0], 2),
        "ended_aggregate_mb_per_s": round(ended[4] / ended[0] / 1e6, 1),
        "ended_watchers_verified": ended[2],
        "ended_server_cpu_seconds": round(ended[1], 2),
        "ended_rss_before_mib": round(ended_before / 2**20, 1),
        "ended_rss_peak_mib": round(ended[3] / 2**20, 1),
    }


def _crowd(server: Server, stream: bytes, count: int) -> tuple[float, float, int, int, int, list]:
    """``count`` watchers of game 7 at once, read to their end: seconds, server CPU,
    watchers that got exactly ``stream``, peak RSS, bytes, and the sockets."""
    before, _ = server.memory()
    cpu_before = server.cpu()
    started = time.time()
    crowd = [socket.create_connection(("127.0.0.1", server.game_port)) for _ in range(count)]
    for sock in crowd:
        sock.sendall(b"G/7/crowd\0")
        sock.setblocking(False)
    selector = selectors.DefaultSelector()
    received = {sock: 0 for sock in crowd}
    digests = {sock: hashlib.sha256() for sock in crowd}
    for sock in crowd:
        selector.register(sock, selectors.EVENT_READ)
    peak = before
    while any(got < len(stream) for got in received.values()) and time.time() - started < 300:
        for key, _ in selector.select(1):
            try:
                chunk = key.fileobj.recv(1 << 20)
            except BlockingIOError:
                continue
            received[key.fileobj] += len(chunk)
            digests[key.fileobj].update(chunk)
        peak = max(peak, server.memory()[0])
    elapsed = time.time() - started
    good = sum(1 for d in digests.values() if d.hexdigest() == hashlib.sha256(stream).hexdigest())
    return elapsed, server.cpu() - cpu_before, good, peak, sum(received.values()), crowd

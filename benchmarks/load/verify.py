"""What the server did with the load: every saved file and every watcher's bytes checked, and the
latencies (row, save, watcher) read from them."""

from __future__ import annotations

import hashlib
import statistics
import time

from benchmarks.load.plans import GamePlan
from benchmarks.load.server import Server
from benchmarks.load.streams import make_stream, stream_key
from benchmarks.process import Process


def verify(server: Process, games: list[GamePlan], results: list[dict], timeout: float) -> dict:
    """Every game's saved file is the full stream; every watcher got exactly it.

    A server that saves nothing (the floor) has only its watchers checked.
    """
    expected = {stream_key(game): make_stream(*stream_key(game)) for game in games}
    outcome = verify_watchers(games, results, expected)
    if not server.saves:
        return {"saved": None, "verified": None, **outcome}
    from faf_replay.save.vault import vault_path  # noqa: PLC0415

    vault = server.workdir / "replays"
    paths = {game.id: vault_path(vault, game.id) for game in games}
    pending = set(paths)
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        pending = {game_id for game_id in pending if not server.is_saved(paths[game_id])}
        if pending:
            time.sleep(0.5)
    saved = len(games) - len(pending)
    verified = sum(
        1
        for game in games
        if game.id not in pending and server.read_saved(paths[game.id]) == expected[stream_key(game)]
    )
    return {"saved": saved, "verified": verified, **outcome}


def verify_watchers(games: list[GamePlan], results: list[dict], expected: dict[tuple, bytes]) -> dict:
    """Watchers that got as many bytes as the stream, and those that got exactly it."""
    digests = {key: hashlib.sha256(stream).hexdigest() for key, stream in expected.items()}
    by_id = {game.id: stream_key(game) for game in games}
    watches = [w for r in results for w in r["watches"]]
    complete = sum(1 for w in watches if w["done"] and w["received"] == len(expected[by_id[w["game"]]]))
    good = sum(1 for w in watches if w["done"] and w["sha256"] == digests[by_id[w["game"]]])
    return {"watchers": len(watches), "watchers_complete": complete, "watchers_verified": good}


def watcher_timing(results: list[dict], start_at: float, rate: float | None, delay: float) -> dict:
    """How watchers were served. The first byte: seconds from a watcher's
    ``G/…\0`` to the first byte back (the replay header, not delayed), for
    those that join a running game (``--late-watchers-after``; at the start a
    watcher may wait for the header itself). The delay's accuracy: for those
    that joined at the start, how far behind the uploads each timed byte came,
    less the delay (negative: earlier than the delay allows). Uploads send byte
    ``x`` at ``start_at + x / rate``, so that is when a byte was played."""
    watches = [w for r in results for w in r["watches"] if w["first_at"] and w["asked_at"]]
    late = [w for w in watches if w["join_at"] - start_at >= 5]
    early = [w for w in watches if w["join_at"] - start_at < 5]
    figures = {}
    first = sorted(w["first_at"] - w["asked_at"] for w in late)
    if first:
        figures["watcher_first_byte_median_s"] = round(statistics.median(first), 4)
        figures["watcher_first_byte_p99_s"] = round(percentile(first, 0.99), 4)
    late_by = (
        sorted(
            at - (start_at + mark / rate) - delay
            for w in early
            for mark, at in zip(w["marks"], w["marked_at"], strict=False)
        )
        if rate
        else []
    )
    if late_by:
        figures["watcher_behind_the_delay_median_s"] = round(statistics.median(late_by), 3)
        figures["watcher_behind_the_delay_p99_s"] = round(percentile(late_by, 0.99), 3)
        figures["watcher_behind_the_delay_min_s"] = round(late_by[0], 3)
    return figures


def row_latencies(results: list[dict], available_at: dict[int, float]) -> list[float]:
    """Per game: seconds from its last upload closing (the generators' clock) to
    its database row saying ``replay_available = 1`` (seen by polling, within
    50 ms): a saved replay as FAF's users see it."""
    last_upload: dict[int, float] = {}
    for result in results:
        for upload in result["uploads"]:
            if upload["closed_at"]:
                last_upload[upload["game"]] = max(last_upload.get(upload["game"], 0.0), upload["closed_at"])
    return sorted(available_at[g] - last_upload[g] for g in available_at if g in last_upload)


def save_latencies(server: Server) -> list[float]:
    """Per game: seconds from its last upload ending to its file saved (the server's own clock)."""
    last_upload: dict[int, float] = {}
    saved_at: dict[int, float] = {}
    for event in server.events():
        namespace, game = event.get("log_namespace"), event.get("game_id")
        if namespace == "faf_replay.replay.upload" and game is not None:
            last_upload[game] = max(last_upload.get(game, 0.0), event["log_time"])
        elif namespace == "faf_replay.save.saver" and game is not None and "path" in event:
            saved_at[game] = event["log_time"]
    return sorted(saved_at[g] - last_upload[g] for g in saved_at if g in last_upload)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]

"""What the live-games API (``/games``, the page at ``/``) says of a game."""

from __future__ import annotations

from bisect import bisect_right
from functools import lru_cache
from itertools import pairwise
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from faf_replay.replay.lifecycle import State
from faf_replay.replay.ticks import TickCounter
from faf_replay.save.metadata import header_facts, header_players

if TYPE_CHECKING:
    from faf_replay.replay.game import Game


#: Seconds of stream rate the status gives, and the width of each of its buckets.
RATE_SPAN, RATE_STEP = 300, 10

_ticks: WeakKeyDictionary[Game, TickCounter] = WeakKeyDictionary()


@lru_cache(maxsize=256)
def _header(header: bytes) -> tuple[str, tuple[tuple[str, str, str], ...]]:
    players = tuple((p["name"], p["team"], p["faction"]) for p in header_players(header))
    return str(header_facts(header)["mapname"]), players


def _visible_ticks(game: Game) -> int:
    """Ticks of what watchers may see (never ahead of the delay), counted as it grows."""
    counter = _ticks.get(game)
    if counter is None:
        counter = _ticks[game] = TickCounter()
    while counter.fed < game.visible:
        counter.feed(game.read(counter.fed, game.visible))
    return counter.ticks


def stream_rate(samples: tuple[tuple[float, int], ...], now: float) -> list[float]:
    """Bytes a second the longest upload grew by, in ``RATE_STEP`` buckets over the last
    ``RATE_SPAN`` seconds, oldest first (0 where nothing is known)."""
    times = [t for t, _ in samples]

    def length(at: float) -> int:
        index = bisect_right(times, at)
        return samples[index - 1][1] if index else 0

    edges = [now - RATE_SPAN + RATE_STEP * k for k in range(RATE_SPAN // RATE_STEP + 1)]
    lengths = [length(edge) for edge in edges]
    return [round((b - a) / RATE_STEP, 1) for a, b in pairwise(lengths)]


def game_status(game: Game, now: float, delay: float, from_vault: bool = False) -> dict[str, object]:
    """A live game (``from_vault``: a watcher who comes once it is saved gets it from the vault):
    its counts and times, what its replay header tells (map, players with team and faction),
    the game time watchers may see (ticks) and the stream's rate over the last minutes."""
    if game.no_live_watchers:
        watchable_in = float(delay)  # not live (its players are gone); the vault, after the delay
    elif game.visible or game.write_phase_over or not game.uploader_count:
        watchable_in = 0.0 if game.header is not None else float(delay)
    elif game.first_body_at is None:
        watchable_in = float(delay)  # no body yet: at least the whole delay
    else:
        watchable_in = max(0.0, game.first_body_at + delay - now)
    return {
        "game_id": game.game_id,
        "uploaders": game.uploader_count,
        "watchers": game.watcher_count,
        "merged_bytes": game.merged_length,
        "visible_bytes": game.visible,
        "seconds_since_start": round(max(0.0, now - game.started_at), 1),
        "watchable_in": round(watchable_in, 1),
        "ending": game.state is not State.ACCEPTING or not game.uploader_count,
        "state": game.state.value,
        # A game cut while its players were connected waits in the vault (GameRegistry.vault_hold).
        "watchable_from_vault": from_vault and game.state in (State.DRAINING, State.DONE) and not game.cut,
        **_described(game, now),
    }


def _described(game: Game, now: float) -> dict[str, object]:
    mapname, players = _header(game.header) if game.header is not None else ("", ())
    return {
        "map": mapname,
        "players": [{"name": name, "team": team, "faction": faction} for name, team, faction in players],
        "ticks": _visible_ticks(game),
        "stream_rate": stream_rate(game.received_history(), now),
    }


def ended_status(
    game_id: int, ended_at: float, now: float, from_vault: bool, hold: float = 0.0
) -> dict[str, object]:
    """A game that ended recently: no longer live; watchable from the vault when ``from_vault``,
    once its replay has waited there ``hold`` seconds (``GameRegistry.vault_hold``: a game cut
    while its players were connected waits out the delay). Its file is written before the game
    is done, so ``watchable_in`` counted from ``ended_at`` is never too early."""
    wait = max(0.0, ended_at + hold - now) if from_vault else 0.0
    return {
        "game_id": game_id,
        "state": "ended",
        "seconds_since_end": round(max(0.0, now - ended_at), 1),
        "watchable_from_vault": from_vault and wait == 0,
        "watchable_in": round(wait, 1),
    }

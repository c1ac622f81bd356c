"""What the live-games API (``/games``, the page at ``/``) says of a game."""

from __future__ import annotations

from typing import TYPE_CHECKING

from faf_replay.replay.lifecycle import State

if TYPE_CHECKING:
    from faf_replay.replay.game import Game


def game_status(game: Game, now: float, delay: float, from_vault: bool = False) -> dict[str, object]:
    """A live game (``from_vault``: a watcher who comes once it is saved gets it from the vault)."""
    if game.visible or game.write_phase_over or not game.uploader_count:
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
        "watchable_from_vault": from_vault and game.state in (State.DRAINING, State.DONE),
    }


def ended_status(game_id: int, ended_at: float, now: float, from_vault: bool) -> dict[str, object]:
    """A game that ended recently: no longer live; watchable from the vault when ``from_vault``."""
    return {
        "game_id": game_id,
        "state": "ended",
        "seconds_since_end": round(max(0.0, now - ended_at), 1),
        "watchable_from_vault": from_vault,
    }

"""The JSON line of a saved replay when no database tells us about the game.

Without FAF's database the replay header is the only witness: it names the map,
the armies and their teams and the victory condition. Everything else gets a
neutral value that FAF's clients accept (the featured mod ``faf`` is what the
Java client itself assumes when it cannot tell). Pure logic: the header is
decoded with ``fafreplay``, FAF's own parser, and never trusted to be UTF-8.
"""

from __future__ import annotations

import math
from typing import Any

import fafreplay

from faf_replay.replay_header import map_folder

#: The victory conditions as FAF's database numbers them (``game_stats.gameType``).
_GAME_TYPES = {"demoralization": "0", "domination": "1", "eradication": "2", "sandbox": "3"}
_REPLAY_SUFFIX = ".scfareplay"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def login_from_name(name: str) -> str:
    """FAF names uploads ``<login>.SCFAreplay``; the login is the useful part."""
    if name.lower().endswith(_REPLAY_SUFFIX):
        return name[: -len(_REPLAY_SUFFIX)]
    return name


def _team_key(team: object) -> str:
    if isinstance(team, (int, float)) and math.isfinite(team):
        return str(int(team))
    return "null"


def header_facts(header: bytes) -> dict[str, Any]:
    """Map name, teams, player count and game type as the header tells them."""
    facts: dict[str, Any] = {"mapname": "None", "teams": {}, "num_players": 0, "game_type": "unknown"}
    try:
        parsed = fafreplay.Parser().parse_header(header)
    except Exception:
        parsed = None
    if not isinstance(parsed, dict):
        folder = _folder_from_raw(header)
        if folder:
            facts["mapname"] = folder
        return facts

    scenario = parsed.get("scenario") or {}
    options = scenario.get("Options") or {} if isinstance(scenario, dict) else {}
    folder = None
    for path in (options.get("ScenarioFile"), parsed.get("map_file")):
        folder = map_folder(b"\r\n" + _text(path).encode())
        if folder:
            break
    facts["mapname"] = folder or "None"
    facts["game_type"] = _GAME_TYPES.get(_text(options.get("Victory")).lower(), "unknown")

    teams: dict[str, list[str]] = {}
    players = 0
    armies = parsed.get("armies") or {}
    for army in armies.values() if isinstance(armies, dict) else ():
        if not isinstance(army, dict) or army.get("Civilian"):
            continue
        players += 1
        if army.get("Human") and not army.get("AIPersonality"):
            teams.setdefault(_team_key(army.get("Team")), []).append(_text(army.get("PlayerName")))
    facts["teams"] = teams
    facts["num_players"] = players
    return facts


def _folder_from_raw(header: bytes) -> str | None:
    """The map folder straight from the third header field, when the parser gave up."""
    first = header.find(b"\0")
    if first < 0:
        return None
    start = first + 4
    end = header.find(b"\0", start)
    return map_folder(header[start:end]) if end > start else None


def standalone_metadata(
    game_id: int,
    header: bytes,
    *,
    recorder: str,
    launched_at: float,
    game_end: float,
) -> dict[str, Any]:
    """Every key of SPEC §7, from the replay header and the server clock."""
    facts = header_facts(header)
    return {
        "uid": game_id,
        "complete": True,
        "state": "PLAYING",
        "featured_mod": "faf",
        "featured_mod_versions": {},
        "game_type": facts["game_type"],
        "recorder": recorder,
        "host": "",
        "launched_at": int(launched_at),
        "game_end": int(game_end),
        "title": "",
        "mapname": facts["mapname"],
        "num_players": facts["num_players"],
        "teams": facts["teams"],
        "version": 2,
        "compression": "zstd",
    }

"""The JSON line of a saved replay (docs/protocol.md, "Saved file").

From FAF's database when it knows the game (:func:`database_metadata`), else
from the replay header (:func:`standalone_metadata`): the header names the
map, the armies and their teams and the victory condition; everything else
gets a neutral value that FAF's clients accept (the featured mod ``faf`` is
what the Java client itself assumes when it cannot tell). Pure logic: the
header is decoded with ``fafreplay``, FAF's own parser, and never trusted to be
UTF-8.
"""

from __future__ import annotations

import math
import posixpath
from typing import TYPE_CHECKING, Any

import fafreplay
from fafreplay import commands

from faf_replay.replay.replay_header import map_folder
from faf_replay.save.best_effort import guarded

if TYPE_CHECKING:
    from faf_replay.database.pool import GameRecord

#: FAF's parser reading nothing but the Advance commands, desyncs included.
_TICK_COUNTER = fafreplay.Parser(commands=[commands.Advance], save_commands=False, stop_on_desync=False)

#: What FAF's client assumes when a replay does not say.
DEFAULT_FEATURED_MOD = "faf"

#: The victory conditions as FAF's database names them (``game_stats.gameType``).
_GAME_TYPES = {
    name.lower(): name for name in ("DEMORALIZATION", "DOMINATION", "ERADICATION", "SANDBOX", "DECAPITATION")
}
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


def header_facts(header: bytes, problems: list[str] | None = None) -> dict[str, Any]:
    """Map name, teams, player count and game type as the header tells them;
    neutral values (and a line in ``problems``) where it cannot be read."""
    parsed, why = guarded(lambda: fafreplay.Parser().parse_header(header))
    if why is None:
        facts, why = guarded(_facts, parsed)
        if facts is not None:
            return facts
    if problems is not None:
        problems.append(f"its replay header cannot be read ({why})")
    facts = {"mapname": "None", "teams": {}, "num_players": 0, "game_type": "unknown"}
    folder, _ = guarded(_folder_from_raw, header)
    if folder:
        facts["mapname"] = folder
    return facts


def _facts(parsed: Any) -> dict[str, Any]:
    if not isinstance(parsed, dict):
        raise TypeError(f"the parser gave {type(parsed).__name__}, not a mapping")
    scenario = parsed.get("scenario") or {}
    options = scenario.get("Options") or {} if isinstance(scenario, dict) else {}
    if not isinstance(options, dict):
        options = {}
    folder = None
    for path in (options.get("ScenarioFile"), parsed.get("map_file")):
        folder = map_folder(b"\r\n" + _text(path).encode())
        if folder:
            break
    teams: dict[str, list[str]] = {}
    players = 0
    armies = parsed.get("armies") or {}
    for _, army in sorted(armies.items(), key=_army_order) if isinstance(armies, dict) else ():
        if not isinstance(army, dict) or army.get("Civilian"):
            continue
        players += 1
        if army.get("Human") and not army.get("AIPersonality"):
            teams.setdefault(_team_key(army.get("Team")), []).append(_text(army.get("PlayerName")))
    return {
        "mapname": folder or "None",
        "teams": teams,
        "num_players": players,
        "game_type": _GAME_TYPES.get(_text(options.get("Victory")).lower(), "unknown"),
    }


def _army_order(item: tuple[Any, Any]) -> tuple[int, str]:
    """Armies in the header's order (the parser's mapping has none of its own)."""
    key = item[0]
    return (key, "") if isinstance(key, int) else (1 << 30, str(key))


#: FA's factions by their number in an army's ``Faction`` (1-based).
FACTIONS = ("UEF", "Aeon", "Cybran", "Seraphim", "Nomads")


def header_players(header: bytes) -> list[dict[str, str]]:
    """The players as the header names them, each with its team and faction
    (for the live-games page); empty when the header cannot be read."""
    parsed, _ = guarded(lambda: fafreplay.Parser().parse_header(header))
    players, _ = guarded(_players, parsed)
    return players or []


def _players(parsed: Any) -> list[dict[str, str]]:
    armies = parsed.get("armies") or {} if isinstance(parsed, dict) else {}
    found = []
    for _, army in sorted(armies.items(), key=_army_order) if isinstance(armies, dict) else ():
        if not isinstance(army, dict) or army.get("Civilian") or not army.get("Human"):
            continue
        faction = army.get("Faction")
        number = int(faction) if isinstance(faction, (int, float)) and math.isfinite(faction) else 0
        found.append(
            {
                "name": _text(army.get("PlayerName")),
                "team": _team_key(army.get("Team")),
                "faction": FACTIONS[number - 1] if 1 <= number <= len(FACTIONS) else "?",
            }
        )
    return found


def replay_ticks(body: bytes, problems: list[str] | None = None) -> int | None:
    """Advance ticks in a merged body, or None (and a line in ``problems``)
    when FAF's parser cannot count them.

    Counted by the parser proper, reading only the Advance commands, not by
    ``fafreplay.body_ticks``: that shortcut never checks a command's size, and a
    body command whose size says 0 (``01 00 00``, which any uploader can send,
    or one bit flipped in an earlier command's size can make the count land on)
    keeps it on the same byte for ever, holding the GIL: the whole server froze
    at the save (docs/operations.md, "Errors")."""
    ticks, why = guarded(lambda: int(_TICK_COUNTER.parse_body(body)["sim"]["tick"]))
    if why is not None and problems is not None:
        problems.append(f"its ticks cannot be counted ({why})")
    return ticks


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
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """Every key of the JSON line (docs/protocol.md, "Saved file"), from the
    replay header and the server clock."""
    facts = header_facts(header, problems)
    return {
        "uid": game_id,
        "complete": True,
        "state": "PLAYING",
        "featured_mod": DEFAULT_FEATURED_MOD,
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


def map_name(filename: str | None) -> str:
    """``maps/scmp_003.v0003.zip`` → ``scmp_003.v0003``; "None" when unknown."""
    if not filename:
        return "None"
    return posixpath.splitext(posixpath.basename(filename.replace("\\", "/")))[0]


def database_metadata(record: GameRecord, *, started_at: float, now: float) -> dict[str, Any]:
    """Every key of the JSON line (docs/protocol.md, "Saved file") from the database's record of the game.

    ``started_at`` (the replay's start) stands in for a missing start time and
    ``now`` for a missing end time. AI players count in ``num_players`` but are
    in no team; a NULL team is the team ``"null"``.
    """
    teams: dict[str, list[str]] = {}
    for player in record.players:
        if player.ai or player.login is None:
            continue
        key = "null" if player.team is None else str(player.team)
        teams.setdefault(key, []).append(player.login)
    return {
        "uid": record.game_id,
        "complete": True,
        "state": "PLAYING",
        "featured_mod": record.featured_mod or DEFAULT_FEATURED_MOD,
        "featured_mod_versions": dict(record.featured_mod_versions),
        "game_type": record.game_type if record.game_type is not None else "unknown",
        "recorder": record.host or "",
        "host": record.host or "",
        "launched_at": int(record.started_at if record.started_at is not None else started_at),
        "game_end": int(record.ended_at if record.ended_at is not None else now),
        "title": record.title or "",
        "mapname": map_name(record.map_file),
        "num_players": len(record.players),
        "teams": teams,
        "version": 2,
        "compression": "zstd",
    }

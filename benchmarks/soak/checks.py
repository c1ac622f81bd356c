"""The soak's end checks, for every game and for the server as a whole.

Every saved replay is read back with FAF's own parser (``fafreplay``), never with the server's
code. A game no fault cut must be saved exactly: its recording, or for ``diverging_1`` one of
its headers with upload 5's body (docs/protocol.md, "Merging the uploads"). A game a kill or a
deploy cut must keep at least what the spool's files held of it just before (``faults.spooled``):
for identical uploads, the longest of them; for uploads that differ, the longest prefix two of
them agree on (the quorum); its body a prefix of one upload's body, never a splice.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import fafreplay

from benchmarks.soak.faults import Done
from benchmarks.soak.players import GameLog, WatchLog
from faf_replay.save.metadata import replay_ticks
from faf_replay.save.vault import vault_path
from tests.support.mutations import agreed_body, body, header_end
from tests.support.recordings import recording

#: Seconds around a kill or a deploy within which a player's lost connection is the fault's doing.
CUT_MARGIN = 5.0


@dataclass
class Verdicts:
    games: int = 0
    saved: int = 0
    exact: int = 0
    cut: int = 0
    #: Cut games that kept at least their durable floor.
    cut_kept: int = 0
    nothing_durable: int = 0
    #: Cut games no fault cut: the network cut or lost every upload (that the merge follows).
    cut_by_network: int = 0
    lost: int = 0
    bytes_lost: int = 0
    rows_ok: int = 0
    watchers: int = 0
    watchers_whole: int = 0
    watchers_checked: int = 0
    problems: list[str] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)

    def problem(self, kind: str, text: str) -> None:
        self.kinds[kind] += 1
        if self.kinds[kind] <= 20:
            self.problems.append(f"{kind}: {text}")


def read_replay(path: Path) -> bytes | None:
    """The raw SCFA stream a saved file holds (FAF's parser), or None."""
    try:
        with path.open("rb") as file:
            return bytes(fafreplay.extract_scfa(file))
    except FileNotFoundError:
        return None
    except Exception:
        return b"unreadable"


def _streams(log: GameLog) -> list[bytes]:
    return [recording(upload.recording) for upload in log.plan.uploads]


def floor(log: GameLog, durable: list[tuple[str, float, dict[int, dict[str, int]]]]) -> tuple[int, bool]:
    """The body bytes a cut game's replay must keep, and whether a replay is owed at all
    (some upload's replay header was durable)."""
    streams = _streams(log)
    best, owed = 0, False
    for _, _, games in durable:
        held = games.get(log.plan.id)
        if not held:
            continue
        bodies = []
        for name, size in held.items():
            number = int(name.removeprefix("p").split(".")[0])
            stream = streams[number][:size]
            end = header_end(streams[number])
            if end is not None and size >= end:
                owed = True
                bodies.append(stream[end:])
        if not bodies:
            continue
        if len(set(streams)) == 1:
            best = max(best, *(len(b) for b in bodies))
        else:
            best = max(best, len(agreed_body(bodies, 2)[0]))
    return best, owed


def cut_by_fault(
    log: GameLog, done: list[Done], durable: list, kinds: tuple[str, ...] = ("kill", "deploy")
) -> bool:
    """Whether a kill or a deploy (``kinds``) found the game unsaved: in the spool then, or
    one of its players' connections lost at that moment."""
    if any(kind in kinds and log.plan.id in games for kind, _, games in durable):
        return True
    restarts = [(d.began, d.ended) for d in done if d.kind in kinds]
    return any(
        began - CUT_MARGIN <= at <= ended + CUT_MARGIN for at, _ in log.cuts for began, ended in restarts
    )


def check_game(
    verdicts: Verdicts, log: GameLog, *, vault: Path, rows: dict, done: list[Done], durable: list
) -> bytes | None:
    verdicts.games += 1
    streams = _streams(log)
    headers = {stream[: header_end(stream)] for stream in streams}
    diverging = len(set(streams)) > 1
    whole = body(recording("diverging_1/5")) if diverging else body(streams[0])
    saved = read_replay(vault_path(vault, log.plan.id))
    game = log.plan.id
    if saved == b"unreadable":
        verdicts.problem("unreadable replay", f"game {game}: fafreplay cannot read its file")
        verdicts.lost += 1
        return None
    end = header_end(saved) if saved is not None else None
    saved_body = saved[end:] if saved is not None and end is not None else b""
    if saved is not None:
        verdicts.saved += 1
        if end is None or saved[:end] not in headers:
            verdicts.problem("wrong header", f"game {game}: the saved replay header is no upload's")
    # Exactness is owed when an upload sent everything (with diverging_1, upload 5, whose body
    # the merge follows). One every upload of which the network cut or lost (a dead-peer
    # verdict under loss; players vanishing) is judged as a cut game, without a durable floor.
    names = [f"p{number}.SCFAreplay" for number in range(len(log.plan.uploads))]
    followed = [names[5]] if diverging else names
    finished = any(name not in log.unfinished for name in followed)
    if finished and not cut_by_fault(log, done, durable):
        if saved is not None and end is not None and saved_body == whole and saved[:end] in headers:
            verdicts.exact += 1
        else:
            verdicts.lost += 1
            kept = len(saved_body) if saved is not None and whole.startswith(saved_body) else 0
            verdicts.bytes_lost += len(whole) - kept
            what = "nothing saved" if saved is None else f"{len(saved_body)} of {len(whole)} body bytes"
            verdicts.problem("not exact", f"game {game} (no fault cut it; cuts {log.cuts}): {what}")
    else:
        verdicts.cut += 1
        by_fault = cut_by_fault(log, done, durable)
        verdicts.cut_by_network += not by_fault
        least, owed = floor(log, durable) if by_fault else (0, False)
        if saved is None:
            if owed:
                verdicts.lost += 1
                verdicts.bytes_lost += least
                verdicts.problem("lost", f"game {game}: cut, {least} body bytes durable, nothing saved")
            else:
                verdicts.nothing_durable += 1
        elif not any(body(stream).startswith(saved_body) for stream in streams):
            verdicts.lost += 1
            verdicts.problem("splice", f"game {game}: its body ({len(saved_body)} B) is no upload's prefix")
        elif len(saved_body) < least:
            verdicts.lost += 1
            verdicts.bytes_lost += least - len(saved_body)
            verdicts.problem(
                "short", f"game {game}: {len(saved_body)} body bytes saved, {least} were durable"
            )
        else:
            verdicts.cut_kept += 1
    if saved is not None:
        available, ticks = rows.get(game, (0, None))
        expected = replay_ticks(saved_body)  # the server's own count (docs/benchmarks.md says so)
        if available == 1 and ticks == expected:  # both None when FAF's parser refuses the body
            verdicts.rows_ok += 1
        else:
            verdicts.problem(
                "row", f"game {game}: replay_available {available}, ticks {ticks} (file: {expected})"
            )
    return saved_body if saved is not None else None


def check_watcher(verdicts: Verdicts, watch: WatchLog, log: GameLog, saved_body: bytes | None) -> None:
    """The watcher got no byte the replay lacks (not even one a kill -9 took back: the server
    shows only what is on disk), none earlier than the delay allows."""
    verdicts.watchers += 1
    if not watch.connected:
        return
    verdicts.watchers_checked += 1
    game = watch.game
    if watch.header and not any(stream.startswith(bytes(watch.header)) for stream in _streams(log)):
        verdicts.problem("watcher header", f"game {game}: a watcher got a replay header no upload sent")
    if watch.body:
        if saved_body is None or watch.body > len(saved_body):
            verdicts.problem(
                "watcher extra bytes",
                f"game {game}: a watcher got {watch.body} body bytes, the replay has "
                f"{'none' if saved_body is None else len(saved_body)}",
            )
            return
        if hashlib.sha256(saved_body[: watch.body]).hexdigest() != watch.digest.hexdigest():
            verdicts.problem(
                "watcher bytes", f"game {game}: a watcher's {watch.body} bytes differ from the replay"
            )
            return
    if watch.early:
        _, had, allowed = watch.early[0]
        verdicts.problem(
            "watcher early",
            f"game {game}: a watcher had {had} body bytes when the delay allowed {allowed} "
            f"({len(watch.early)} times)",
        )
    if saved_body is not None and watch.body == len(saved_body):
        verdicts.watchers_whole += 1


def check_server(verdicts: Verdicts, spool: Path, lines: list[tuple[int, dict]], honest: set[int]) -> dict:
    """Nothing left in the spool but quarantine, no critical line, no traceback."""
    left = sorted(p.name for p in (spool / "games").iterdir()) if (spool / "games").is_dir() else []
    outbox = sorted(p.name for p in (spool / "outbox").glob("*.json")) if (spool / "outbox").is_dir() else []
    quarantine = (
        sorted(p.name for p in (spool / "quarantine").iterdir()) if (spool / "quarantine").is_dir() else []
    )
    if left:
        verdicts.problem("left in the spool", f"{len(left)} games: {left[:10]}")
    if outbox:
        verdicts.problem("left in the outbox", f"{len(outbox)} entries: {outbox[:10]}")
    for name in quarantine:
        if int(name.split("-")[0]) in honest:
            verdicts.problem("honest game quarantined", name)
    levels: Counter = Counter()
    for life, event in lines:
        level = event.get("log_level", {}).get("name") if isinstance(event.get("log_level"), dict) else None
        levels[level or "text"] += 1
        text = event.get("text") or json.dumps(event)[:2000]
        if level == "critical" or "log_failure" in event or "Traceback" in text:
            verdicts.problem("critical or traceback", f"life {life}: {text[:300]}")
    return {"quarantined": quarantine, "log_levels": dict(levels)}

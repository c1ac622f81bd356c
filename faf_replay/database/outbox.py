"""The outbox: database work that must not be lost when the database is away.

After a replay file is written, what the database still has to learn about it
(its metadata for the file's JSON line, ``replay_ticks``, ``replay_available``)
is one small JSON entry in ``<spool>/outbox/<game_id>.json``, written
atomically, removed once the database has it. Entries survive restarts. This
module keeps the entries and rewrites a saved file's JSON line; the
``database/bookkeeper.py`` drains it. No Twisted here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from faf_replay.save import durable
from faf_replay.save.vault import metadata_line


@dataclass(frozen=True)
class Entry:
    game_id: int
    #: The saved file, and its size when we wrote it: only that file is completed.
    path: str
    size: int
    ticks: int | None
    #: The file's JSON line came from the replay header: fill it from the database.
    needs_metadata: bool
    started_at: float
    ended_at: float


class FileChanged(Exception):
    """The saved file is not the one the entry describes; it is left alone."""


class Outbox:
    """The entries in one folder; this process is the only one changing it.

    Their number is kept in memory (it goes into a metric at every save); the
    folder is read at the start and by :meth:`entries`.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._names = {path.name for path in self.directory.glob("*.json")}

    def add(self, entry: Entry) -> None:
        path = self._path(entry.game_id)
        durable.replace(path, json.dumps(asdict(entry)).encode(), f".{entry.game_id}.")
        self._names.add(path.name)

    def remove(self, game_id: int) -> None:
        path = self._path(game_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self._names.discard(path.name)

    def entries(self) -> list[Entry]:
        """Every entry, oldest game first; unreadable ones are skipped (and kept)."""
        found = []
        for path in self.directory.glob("*.json"):
            try:
                raw: Any = json.loads(path.read_text(encoding="utf-8"))
                found.append(Entry(**raw))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(found, key=lambda e: e.ended_at)

    def __len__(self) -> int:
        return len(self._names)

    def _path(self, game_id: int) -> Path:
        return self.directory / f"{game_id}.json"


def complete_metadata(entry: Entry, metadata: dict[str, Any]) -> int:
    """Replace the JSON line of the entry's file, atomically; returns the new size.

    Blocking file I/O: run it in a thread. Raises :class:`FileChanged` when
    the file is missing or not the size we wrote.
    """
    path = Path(entry.path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileChanged(f"{path} is gone") from None
    if len(data) != entry.size:
        raise FileChanged(f"{path} has {len(data)} bytes, not the {entry.size} we wrote")
    _, newline, rest = data.partition(b"\n")
    if not newline:
        raise FileChanged(f"{path} has no JSON line")
    new = metadata_line(metadata) + b"\n" + rest
    durable.replace(path, new, f".{entry.game_id}.", durable.PUBLIC)
    return len(new)

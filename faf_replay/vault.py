"""The replay vault: where a saved replay goes and how it gets there (SPEC §7).

``vault_path`` is the layout FAF's API serves files from. ``write_replay`` is
blocking file I/O meant for a worker thread: it compresses, writes a temporary
file, fsyncs it and links it into place, so a crash never leaves a truncated
replay and an existing replay is never overwritten. No Twisted here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from faf_replay.durable import fsync_directory, write_temporary


class ReplayExistsError(FileExistsError):
    """A replay for this game is already in the vault; it was left untouched."""


def vault_path(vault: str | os.PathLike[str], game_id: int) -> Path:
    """``<vault>/<a>/<b>/<c>/<d>/<id>.fafreplay`` from the id's digits.

    Pad the id to 10 digits, keep the last 10, drop the last 2 and split the
    remaining 8 into four 2-digit numbers.
    """
    if game_id < 0:
        raise ValueError("game ids are not negative")
    digits = f"{game_id:010d}"[-10:][:8]
    parts = [str(int(digits[i : i + 2])) for i in range(0, 8, 2)]
    return Path(vault, *parts, f"{game_id}.fafreplay")


def metadata_line(metadata: dict[str, Any]) -> bytes:
    """The JSON line of a replay file (without its newline): compact, ASCII."""
    return json.dumps(metadata, separators=(",", ":"), sort_keys=True).encode("ascii")


def encode_replay(metadata: dict[str, Any], scfa: bytes, level: int) -> bytes:
    """A version-2 ``.fafreplay``: one JSON line, ``\\n``, one zstd frame.

    The frame records its content size (one-shot decompressors need it) and
    nothing follows it.
    """
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return metadata_line(metadata) + b"\n" + compressor.compress(scfa)


@dataclass(frozen=True)
class SavedReplay:
    path: Path
    size: int


def write_replay(
    vault: str | os.PathLike[str],
    game_id: int,
    metadata: dict[str, Any],
    scfa: bytes,
    level: int,
) -> SavedReplay:
    """Compress and store one replay; blocking, run it in a thread.

    Raises :class:`ReplayExistsError` when the game already has a file, and
    ``OSError`` when the disk refuses; no partial file is left either way.
    """
    final = vault_path(vault, game_id)
    if final.exists():
        raise ReplayExistsError(f"{final} already exists")
    data = encode_replay(metadata, scfa, level)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = write_temporary(final.parent, f".{game_id}.", data)
    try:
        # link() fails when the target exists: never overwrite, atomically.
        os.link(temporary, final)
    except FileExistsError:
        raise ReplayExistsError(f"{final} already exists") from None
    finally:
        os.unlink(temporary)
    fsync_directory(final.parent)
    return SavedReplay(final, len(data))

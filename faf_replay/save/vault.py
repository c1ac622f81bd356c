"""The replay vault: where a saved replay goes and how it gets there (docs/protocol.md, "Saved file").

``vault_path`` is the layout FAF's API serves files from. ``write_replay`` is
blocking file I/O meant for a worker thread: it compresses, writes a temporary
file, fsyncs it and puts it into place, so a crash never leaves a truncated
replay and an existing replay is never overwritten. No Twisted here.

Putting it into place is ``link(temporary, final)``: it fails when ``final``
exists, so it never overwrites, and ``final`` appears whole or not at all.
Some filesystems FAF keeps replays on refuse hard links (CIFS/SMB shares,
exFAT, FUSE mounts of object stores: ``EPERM``, ``EOPNOTSUPP`` or ``ENOSYS``;
``EPERM`` cannot be Linux's ``protected_hardlinks`` here, the temporary file is
our own). The first refusal is remembered for that vault for the rest of the
process, and its replays are saved by *claim and replace* instead, this save
included:

1. claim the name: ``open(final, O_CREAT | O_EXCL)`` creates it empty, and
   fails if anything is there (that check and the creation are one step, on
   CIFS too: the server does them);
2. ``rename(temporary, final)`` over our own empty claim, then fsync the folder.

Why it is as safe as the link: an existing replay makes step 1 fail, so it is
never renamed over; and at every instant ``final`` is absent, empty or the
whole fsynced replay. A real replay is never empty (it has at least its JSON
line), so an empty file at ``final`` can only be a claim whose save was
interrupted (a crash between 1 and 2): the next save of that game takes it
over and completes it, whichever way it saves (a link fails on it with
``EEXIST``, and then the save goes through the claim too). The one case not
covered is two processes saving the same game into one vault at the same
moment: one could take over the other's fresh claim (a server never saves one
game twice at once). ``renameat2(RENAME_NOREPLACE)`` would need no claim, but
the FUSE and CIFS mounts that lack links often lack it too (FUSE 2 answers
``EINVAL``). :attr:`SavedReplay.links_refused` tells the caller, which logs
the switch once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from faf_replay.save.durable import PUBLIC, fsync_directory, write_temporary

#: What ``link()`` fails with on a filesystem without hard links.
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS})

#: Vaults (as given to :func:`write_replay`) whose filesystem refused a hard
#: link in this process: link() is not tried there again.
_refuses_links: set[str] = set()


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
    return metadata_line(metadata) + b"\n" + _compressor(level).compress(scfa)


def decode_replay(data: bytes) -> bytes:
    """The replay stream of a version-2 ``.fafreplay`` (:func:`encode_replay`'s inverse)."""
    frame = data[data.index(b"\n") + 1 :]
    with zstandard.ZstdDecompressor().stream_reader(frame) as reader:
        return reader.read()


#: Each saving thread's compressors, by level: a compressor is not shared
#: between threads, and one reused starts a frame without allocating and
#: clearing its tables again (a third of the work at level 10 for a 300 KB
#: replay). Its tables stay as big as the largest replay it compressed.
_compressors = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    by_level: dict[int, zstandard.ZstdCompressor] | None = getattr(_compressors, "by_level", None)
    if by_level is None:
        by_level = _compressors.by_level = {}
    compressor = by_level.get(level)
    if compressor is None:
        compressor = by_level[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return compressor


@dataclass(frozen=True)
class SavedReplay:
    path: Path
    size: int
    #: The vault's filesystem refuses hard links: the file was claimed and
    #: renamed into place (the caller logs that once and sets a metric).
    links_refused: bool = False


def refuses_links(vault: str | os.PathLike[str]) -> bool:
    """Whether ``vault`` refused a hard link in this process (saves claim and replace)."""
    return os.fspath(vault) in _refuses_links


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
    if _holds_replay(final):
        raise ReplayExistsError(f"{final} already exists")
    data = encode_replay(metadata, scfa, level)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = write_temporary(final.parent, f".{game_id}.", data, PUBLIC)
    try:
        _put_in_place(temporary, final, os.fspath(vault))
    finally:
        with contextlib.suppress(FileNotFoundError):  # gone when it was renamed
            os.unlink(temporary)
    fsync_directory(final.parent)
    return SavedReplay(final, len(data), refuses_links(vault))


def _put_in_place(temporary: Path, final: Path, vault: str) -> None:
    """``final`` becomes ``temporary``'s file, unless a replay is there (see the module's doc)."""
    if vault not in _refuses_links:
        try:
            os.link(temporary, final)  # fails when final exists: never overwrites
            return
        except FileExistsError:
            pass  # a replay (refused below), or an interrupted claim (completed below)
        except OSError as error:
            if error.errno not in _NO_LINKS:
                raise
            _refuses_links.add(vault)
    _claim(final)
    os.replace(temporary, final)


def _claim(final: Path) -> None:
    """Create ``final`` empty, or take over the empty one an interrupted save
    left; raises :class:`ReplayExistsError` when a replay is there."""
    try:
        os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        if _holds_replay(final):
            raise ReplayExistsError(f"{final} already exists") from None


def _holds_replay(path: Path) -> bool:
    """Something non-empty is at ``path``: a replay, never to be replaced. An
    empty file is an interrupted claim (a replay has at least its JSON line)."""
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def vault_refusal(vault: str | os.PathLike[str]) -> str | None:
    """Why a replay cannot be written into ``vault`` now, or None when a file
    can be created there (blocking: at startup, or in a thread)."""
    try:
        os.makedirs(vault, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=vault, prefix=".health."):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None

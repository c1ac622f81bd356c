"""Files that survive a crash or a power loss whole, or not at all.

Write to a temporary file in the target's folder, fsync it, then move or link
it into place and fsync the folder. Blocking file I/O: call it in a thread.
No Twisted here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

#: Private files (the spool's, the outbox's): only the server's user reads them.
PRIVATE = 0o600
#: Files others must read: saved replays, which a content server serves as
#: its own user (as the Rust server's files, 0666 less the usual umask).
PUBLIC = 0o644


def write_temporary(directory: Path, prefix: str, data: bytes, mode: int = PRIVATE) -> Path:
    """``data`` in a new fsynced file in ``directory`` with ``mode`` (where the
    filesystem keeps modes); the caller moves or removes it."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        if mode != PRIVATE:  # what mkstemp gives
            with contextlib.suppress(OSError):  # CIFS and exFAT may have no modes to set
                os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def replace(path: Path, data: bytes, prefix: str = ".", mode: int = PRIVATE) -> None:
    """Make ``path`` hold ``data``, atomically, whatever it held before."""
    temporary = write_temporary(path.parent, prefix, data, mode)
    try:
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a new or moved name in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

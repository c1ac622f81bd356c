"""Files that survive a crash or a power loss whole, or not at all.

Write to a temporary file in the target's folder, fsync it, then move or link
it into place and fsync the folder. Blocking file I/O: call it in a thread.
No Twisted here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_temporary(directory: Path, prefix: str, data: bytes) -> Path:
    """``data`` in a new fsynced file in ``directory``; the caller moves or removes it."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def replace(path: Path, data: bytes, prefix: str = ".") -> None:
    """Make ``path`` hold ``data``, atomically, whatever it held before."""
    temporary = write_temporary(path.parent, prefix, data)
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

"""What the server asks of its process at startup: the open-file limit, and a
garbage collector that leaves the startup objects alone.
"""

from __future__ import annotations

import gc
import resource

from twisted.logger import Logger

log = Logger()


def freeze_startup_objects() -> None:
    """Take what exists once the server is up (modules, classes, functions:
    never garbage) out of the garbage collector's scans. Python's full
    collections stop the reactor for as long as they take, which grows with
    every object they visit; the frozen ones are no longer visited."""
    gc.collect()
    gc.freeze()
    log.info("garbage collector: {count} startup objects frozen", count=gc.get_freeze_count())


def raise_open_file_limit() -> int:
    """Every connection and every spooled upload is a file descriptor: allow as
    many as the hard limit lets us. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:
            log.warn("cannot raise the open-file limit from {soft}: {why}", soft=soft, why=str(error))
            return soft
    log.info("open-file limit: {limit}", limit=hard)
    return hard

"""Calls that must not stop the server: whatever they raise becomes a reason.

What the server takes from the replays themselves (their headers, their
ticks, the spool's files after a crash) is best effort: a parser written in
Rust or C may do anything on nonsense, and the replay must still be saved, the
server must still start. No Twisted here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def guarded(call: Callable[..., T], *args: Any) -> tuple[T | None, str | None]:
    """``call(*args)`` and None, or None and why it failed.

    What the save takes from the replay itself is best effort: whatever a
    parser written in Rust or C raises on nonsense must not stop a save (a
    PyO3 panic derives from ``BaseException``, not ``Exception``; deep data may
    raise ``RecursionError``). Only the interpreter's own exits go through.
    """
    try:
        return call(*args), None
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as error:
        why = " ".join(f"{type(error).__name__}: {error}".split())
        return None, why[:200]

"""What the C allocator (glibc's malloc) holds: in use, and free inside its heaps.

The resident memory of a long-running process keeps its high-water mark, and grows
besides while malloc's heaps fragment: memory freed between blocks still in use stays
mapped, so the resident memory rises slowly for a long while at a constant load
without anything being lost. The two figures here tell that apart from a leak: a
leak is *in use* rising at a constant load; fragmentation is *free* rising while
*in use* does not. Python objects are counted apart (``sys.getallocatedblocks``,
``replayserver_python_allocated_blocks``); this also sees what C libraries allocate
(zstd, the MySQL client, the replay parser).

``mallinfo2`` is glibc's (2.33 and later) and walks the heaps' free lists, which
is cheap next to a scrape. Elsewhere (musl, macOS) :func:`c_allocator` answers
None and the metrics say NaN. No Twisted here.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import cast


class _Mallinfo2(ctypes.Structure):
    # struct mallinfo2, glibc's malloc.h, in its order
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes of the heaps (sbrk'd and the threads' heaps)
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in blocks mapped one by one (the big ones)
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use in the heaps
            "fordblks",  # bytes free in the heaps
            "keepcost",
        )
    ]


@dataclass(frozen=True)
class CAllocator:
    in_use: int  # bytes of live allocations, in the heaps and mapped alone
    free: int  # bytes free inside the heaps: still mapped, mostly resident


@cache
def _mallinfo2() -> Callable[[], _Mallinfo2] | None:
    try:
        function = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    function.restype = _Mallinfo2
    function.argtypes = []
    return cast(Callable[[], _Mallinfo2], function)


def c_allocator() -> CAllocator | None:
    """What malloc holds now; None where there is no ``mallinfo2``."""
    function = _mallinfo2()
    if function is None:
        return None
    info = function()
    return CAllocator(in_use=info.uordblks + info.hblkhd, free=info.fordblks)

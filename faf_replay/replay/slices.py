"""The merged body as watchers read it: slices, the recent ones shared.

Watchers of one game mostly read the same bytes at about the same time; a
:class:`SliceCache` keeps the last few slices it handed out, so that watchers
at the same place share one copy. Slices end at chunk boundaries, so that
watchers that started apart meet on the same keys. No Twisted here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

#: Bytes per slice handed to watchers.
READ_CHUNK = 64 * 1024
#: Slices kept.
KEPT = 8


class SliceCache:
    def __init__(self, read: Callable[[int, int], bytes]) -> None:
        self._read = read
        self._slices: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    def slice(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``, at most up to the next chunk boundary."""
        end = min(end, (start // READ_CHUNK + 1) * READ_CHUNK)
        key = (start, end)
        data = self._slices.get(key)
        if data is None:
            data = self._read(start, end)
            self._slices[key] = data
            if len(self._slices) > KEPT:
                self._slices.popitem(last=False)
        return data

    def clear(self) -> None:
        self._slices.clear()

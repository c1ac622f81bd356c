"""Finding the end of the SCFA replay header in an upload stream (docs/protocol.md, "Replay stream").

The header's length is stored nowhere: it is found by walking its fields. The
walk is written as a generator that asks for "a NUL-terminated string" or
"n bytes", so feeding more bytes resumes exactly where it stopped and no byte is
scanned twice. Strings are never decoded here, and a size field that would run
past the header limit is rejected at once instead of waiting for bytes that
will never come. Pure logic, no Twisted.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from dataclasses import dataclass

#: A header longer than this is bad input (docs/protocol.md, "Replay stream").
MAX_HEADER_SIZE = 1024 * 1024


class ReplayHeaderError(ValueError):
    """The stream does not start with a valid replay header; ``str()`` says why."""


@dataclass(frozen=True)
class _String:
    what: str


@dataclass(frozen=True)
class _Take:
    size: int
    what: str


_Request = _String | _Take
_Walk = Generator[_Request, bytes, None]
_U32 = struct.Struct("<I")


def _walk_fields(found: dict[str, bytes]) -> _Walk:
    """Ask for the header's fields in order; record the replay/map field in ``found``."""
    version = yield _String("game version")
    if not version:
        raise ReplayHeaderError("empty game version string")
    yield _Take(3, "separator after the game version")
    replay_and_map = yield _String("replay version and map")
    if not replay_and_map.startswith(b"Replay v"):
        raise ReplayHeaderError("the replay version field does not start with 'Replay v'")
    found["replay_and_map"] = replay_and_map
    yield _Take(4, "separator after the map")
    for what in ("mods", "scenario info"):
        (size,) = _U32.unpack((yield _Take(4, f"{what} size")))
        yield _Take(size, what)
    (players,) = yield _Take(1, "player count")
    for _ in range(players):
        yield _String("player name")
        yield _Take(4, "player timeouts")
    yield _Take(1, "cheats flag")
    (armies,) = yield _Take(1, "army count")
    for _ in range(armies):
        (size,) = _U32.unpack((yield _Take(4, "army size")))
        yield _Take(size, "army table")
        (source,) = yield _Take(1, "army source id")
        if source != 255:
            yield _Take(1, "army source byte")
    yield _Take(4, "random seed")


class ReplayHeaderScanner:
    """Feed stream bytes until :attr:`length` is known.

    ``feed`` returns ``None`` while the header is incomplete, then the header
    length (the offset of the body in everything fed so far). After that the
    scanner is done and must not be fed again. :attr:`buffer` holds everything
    fed, for the caller to split into header and body.
    """

    __slots__ = ("_limit", "_nul_from", "_pos", "_request", "_walk", "buffer", "found", "length")

    def __init__(self, limit: int = MAX_HEADER_SIZE) -> None:
        self.buffer = bytearray()
        self.length: int | None = None
        self.found: dict[str, bytes] = {}
        self._limit = limit
        self._pos = 0
        self._nul_from = 0
        self._walk = _walk_fields(self.found)
        self._request: _Request = next(self._walk)

    def feed(self, data: bytes) -> int | None:
        if self.length is not None:
            raise RuntimeError("the header is already complete")
        self.buffer += data
        while True:
            value = self._satisfy(self._request)
            if value is None:
                return None
            try:
                self._request = self._walk.send(value)
            except StopIteration:
                self.length = self._pos
                return self.length

    def _satisfy(self, request: _Request) -> bytes | None:
        """The bytes ``request`` asks for, or ``None`` until they have arrived."""
        buffer = self.buffer
        if isinstance(request, _Take):
            end = self._pos + request.size
            if end > self._limit:
                raise ReplayHeaderError(
                    f"{request.what} ({request.size} bytes at offset {self._pos}) runs past "
                    f"the {self._limit}-byte header limit"
                )
            if end > len(buffer):
                return None
        else:
            nul = buffer.find(0, max(self._pos, self._nul_from), self._limit)
            if nul < 0:
                if len(buffer) >= self._limit:
                    raise ReplayHeaderError(
                        f"{request.what} at offset {self._pos} has no NUL within the "
                        f"{self._limit}-byte header limit"
                    )
                self._nul_from = len(buffer)
                return None
            end = nul + 1
        value = bytes(buffer[self._pos : end])
        self._pos = end
        return value[:-1] if isinstance(request, _String) else value


def map_folder(replay_and_map: bytes) -> str | None:
    """The map's folder name from the header's ``Replay v1.9\\r\\n/maps/<folder>/x.scmap``."""
    _, _, path = replay_and_map.partition(b"\r\n")
    parts = path.decode("utf-8", "replace").replace("\\", "/").split("/")
    # ['', 'maps', '<folder>', 'file.scmap']
    if len(parts) >= 4 and parts[1].lower() == "maps" and parts[2]:
        return parts[2]
    return None

"""The connection header: the first bytes of every connection (docs/protocol.md, "Connection header").

``P/<game_id>/<name>\\0`` opens an upload, ``G/<game_id>/<name>\\0`` a download
(a watcher). This module finds and checks the header incrementally, at any split
of the bytes, and hands back whatever followed the NUL: for an uploader those
bytes are already replay data. Pure logic, no Twisted: the protocol in
``replay_protocol.py`` feeds it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: Bytes allowed after the two type bytes, the terminating NUL included.
MAX_HEADER_BODY = 1024
_MAX_GAME_ID = 2**64 - 1
_TYPES = {b"P/": "upload", b"G/": "download"}


class Kind(enum.Enum):
    UPLOAD = "upload"
    DOWNLOAD = "download"


class ConnectionHeaderError(ValueError):
    """The peer sent something that is not a connection header; ``str()`` says why."""


@dataclass(frozen=True)
class ConnectionHeader:
    kind: Kind
    game_id: int
    name: str


def parse_game_part(part: bytes) -> tuple[int, str]:
    """Split ``<game_id>/<name>`` (without the NUL) and check both halves."""
    game_id_bytes, slash, name_bytes = part.partition(b"/")
    if not slash:
        raise ConnectionHeaderError("no '/' between game id and name")
    # bytes.isdigit() is ASCII-only: no sign, space, '_' or Unicode digits pass.
    if not game_id_bytes.isdigit():
        raise ConnectionHeaderError(f"game id {game_id_bytes[:40]!r} is not a decimal number")
    game_id = int(game_id_bytes)
    if game_id > _MAX_GAME_ID:
        raise ConnectionHeaderError("game id does not fit in 64 bits")
    try:
        name = name_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise ConnectionHeaderError("name is not valid UTF-8") from None
    return game_id, name


class ConnectionHeaderParser:
    """Accumulates bytes until the header is complete or proven bad.

    ``feed`` returns ``None`` while more bytes are needed, or the header and the
    bytes that followed it; it raises :class:`ConnectionHeaderError` as soon as
    the bytes seen so far cannot start a valid header.
    """

    __slots__ = ("_buffer", "received")

    def __init__(self) -> None:
        self._buffer = b""
        #: Total bytes fed, so that the caller can tell an empty connection.
        self.received = 0

    def feed(self, data: bytes) -> tuple[ConnectionHeader, bytes] | None:
        self.received += len(data)
        buffer = self._buffer + data if self._buffer else data
        if len(buffer) < 2:
            if buffer and buffer not in (b"P", b"G"):
                raise ConnectionHeaderError(f"unknown connection type {buffer!r}")
            self._buffer = buffer
            return None
        kind = _TYPES.get(buffer[:2])
        if kind is None:
            raise ConnectionHeaderError(f"unknown connection type {buffer[:2]!r}")
        end = buffer.find(b"\0", 2, 2 + MAX_HEADER_BODY)
        if end < 0:
            if len(buffer) >= 2 + MAX_HEADER_BODY:
                raise ConnectionHeaderError(f"no NUL within {MAX_HEADER_BODY} bytes of the connection header")
            self._buffer = buffer
            return None
        self._buffer = b""
        game_id, name = parse_game_part(buffer[2:end])
        return ConnectionHeader(Kind(kind), game_id, name), buffer[end + 1 :]

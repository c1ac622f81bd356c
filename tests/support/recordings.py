"""The real recordings in tests/data (provenance in tests/data/README.md)."""

from __future__ import annotations

import re
import struct
from functools import cache

import fafreplay

from tests.support.paths import DATA


@cache
def recording(name: str) -> bytes:
    """A raw upload stream, e.g. ``example`` or ``diverging_1/5``."""
    return (DATA / f"{name}.scfareplay").read_bytes()


def split(stream: bytes) -> tuple[bytes, bytes]:
    """Header and body, as FAF's own parser finds them."""
    offset = fafreplay.body_offset(stream)
    return stream[:offset], stream[offset:]


DIVERGING = [f"diverging_1/{i}" for i in range(6)]
ALL = ["example", "8805603", "22373098", *DIVERGING]


def chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` cut into pieces of the given sizes, cycling through them."""
    out, position, index = [], 0, 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        out.append(data[position : position + size])
        position += size
        index += 1
    return out


#: Where four bytes of example.scfareplay's replay header, set to ff ff ff 7f,
#: leave a header that still scans field by field (its sizes hold) but whose
#: Lua data is nonsense: fafreplay's parser (Rust, PyO3) panics on it.
POISON_OFFSET = 293


def poisoned(name: str = "example", offset: int = POISON_OFFSET) -> bytes:
    """A real recording with ``ff ff ff 7f`` written over 4 bytes of its replay header."""
    stream = bytearray(recording(name))
    stream[offset : offset + 4] = b"\xff\xff\xff\x7f"
    return bytes(stream)


def with_many_mods(name: str = "22373098", mods: int = 120) -> bytes:
    """A real recording whose replay header lists its one sim mod ``mods``
    times (each a copy with its own uid), as a game with many sim mods has:
    a valid header far larger than 64 KiB (120 copies: about 80 KiB)."""
    stream = recording(name)
    header, body = split(stream)
    size_at = 4 + header.index(b"\0", header.index(b"Replay v")) + 1  # after the map field's 4 bytes
    (size,) = struct.unpack_from("<I", header, size_at)
    table = header[size_at + 4 : size_at + 4 + size]
    # {[1.0] = {…one mod…}}: a table of one entry, keyed by the number 1.
    key_one = b"\x00" + struct.pack("<f", 1.0)
    assert table.startswith(b"\x04" + key_one) and table.endswith(b"\x05"), "one mod, keyed 1"
    mod = table[1 + len(key_one) : -1]
    uid = re.search(rb"\x01uid\x00\x01([^\x00]+)\x00", mod)
    assert uid is not None
    entries = [
        b"\x00"
        + struct.pack("<f", float(number))
        + mod.replace(uid.group(1), f"{number:08d}".encode() + uid.group(1)[8:])
        for number in range(1, mods + 1)
    ]
    table = b"\x04" + b"".join(entries) + b"\x05"
    return header[:size_at] + struct.pack("<I", len(table)) + table + header[size_at + 4 + size :] + body

"""The real recordings in tests/data (provenance in tests/data/README.md)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fafreplay

DATA = Path(__file__).parent / "data"


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

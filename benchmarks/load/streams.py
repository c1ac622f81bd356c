"""The bytes an upload sends: a real recording, its body repeated to the length asked, and its ticks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.load.plans import GamePlan


from benchmarks.load.paths import DATA


def split(stream: bytes) -> tuple[bytes, bytes]:
    import fafreplay  # noqa: PLC0415 - the generators do not need it

    offset = fafreplay.body_offset(stream)
    return stream[:offset], stream[offset:]


def commands(data: bytes, start: int = 0):
    """(offset, type, size) of each command of a replay body from ``start``;
    stops at the end or at a size that cannot be one."""
    position = start
    while position + 3 <= len(data):
        size = int.from_bytes(data[position + 1 : position + 3], "little")
        if size < 3:
            return
        yield position, data[position], size
        position += size


def make_stream(name: str, size: int, vary: bool = False) -> bytes:
    """A real recording's header and its body repeated to about ``size`` bytes.

    With ``vary``, every repetition after the first has about one payload byte
    in eight replaced (command types, sizes and tick counts kept, so the body
    still parses): a long game that compresses about as well as a real one
    (7:1 at level 10) rather than like one recording over and over (900:1).
    """
    header, body = split((DATA / f"{name}.scfareplay").read_bytes())
    repeats = max(1, -(-(size - len(header)) // len(body)))
    if not vary:
        return header + body * repeats
    import random  # noqa: PLC0415

    payload = []  # positions of the body's payload bytes (not a command's type or size, not ticks)
    for position, kind, length in commands(body):
        if kind != 0:
            payload.extend(range(position + 3, min(position + length, len(body))))
    rng = random.Random(size)
    parts = [body]
    for _ in range(repeats - 1):
        copy = bytearray(body)
        for at in rng.sample(payload, len(payload) // 8):
            copy[at] = rng.randrange(256)
        parts.append(bytes(copy))
    return header + b"".join(parts)


def stream_key(game: GamePlan) -> tuple[str, int, bool]:
    """The arguments of ``make_stream`` that give a planned game's stream."""
    return game.recording, game.size, game.vary


def tick_times(stream: bytes, acceleration: float) -> list[tuple[float, int]]:
    """(seconds from the start, end offset) at every Advance command of the body."""
    header, _ = split(stream)
    times, ticks = [], 0
    for position, kind, size in commands(stream, len(header)):
        if kind == 0:
            ticks += int.from_bytes(stream[position + 3 : position + 7], "little")
            times.append((ticks * 0.1 / acceleration, position + size))
    times.append((ticks * 0.1 / acceleration, len(stream)))
    return times

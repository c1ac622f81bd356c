"""Fuzz cases for the whole server, built from the real recordings in tests/data.

Pure data, no Twisted (``tests/system/test_fuzz.py`` runs them against a real
``twistd faf-replay``; ``benchmarks/fuzz.py`` runs them for as long as asked).

* A **mutation** is a small frozen dataclass (:class:`FlipBit`,
  :class:`SetBytes`, :class:`Truncate`, :class:`Insert`, :class:`SetSize`)
  applied to a recording's bytes. Its ``repr`` is the Python that builds it, so
  a case found by fuzzing is pasted into a regression test as it is: a
  recording from tests/data plus the mutations, never a blob of unknown origin.
* :func:`header_fields` walks the replay header field by field (docs/protocol.md, "Replay stream"): it is
  what places a mutation in the header region, on a u32 size field, or inside a
  Lua table (the known poison: ``ff ff ff 7f`` in a Lua table still scans field
  by field, but ``fafreplay.Parser().parse_header()`` panics on some of them).
* A :class:`Connection` is one client: a connection header (the valid one for
  its game, or literal bytes), a mutated recording and/or garbage, sent in
  pieces, maybe cut short, then closed or left open. A :class:`Case` is one
  fuzzed game: a few connections. An :class:`Honest` game is a real recording
  uploaded whole by two or more uploaders in small pieces, with watchers, and
  maybe an intruder (a mutated upload of the same game).
* The hypothesis strategies (:func:`cases`, :func:`honest_games`,
  :func:`batches`) generate them; :func:`draw` takes a reproducible list of
  examples from a strategy for a seed (see its docstring for why not
  ``@given`` around the server). :func:`twins` is a game whose players all
  send the same mutated stream: its replay must be saved exactly as sent.
* :func:`simpler_batches` lists the one-step simplifications of a batch that
  ``benchmarks/fuzz.py`` tries when it shrinks a finding on a real server.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.internal.conjecture import providers
from hypothesis.internal.constants_ast import Constants

from tests.support.recordings import ALL, DIVERGING, recording

#: Four bytes that, written into a Lua table of the replay header, keep the
#: header scannable but make its Lua data nonsense (the known poison case).
POISON = b"\xff\xff\xff\x7f"
#: Sizes that are huge for a header limited to 1 MiB (a real file has 0x80000000).
HUGE_SIZES = (0x80000000, 0xFFFFFFFF, 0x7FFFFFFF, 1024 * 1024, 1024 * 1024 + 1, 0x00100000 - 4096)
#: Game ids: honest games and fuzzed games take fixed-width ids from their own
#: ranges (fixed width: a cut into a connection header means the same bytes
#: whatever the game's number).
HONEST_IDS = 10_000_000
FUZZ_IDS = 20_000_000
#: "diverging_1" as an honest recording: its six real uploads, one uploader each.
DIVERGING_GAME = "diverging_1"


# -- the replay header, field by field (docs/protocol.md, "Replay stream") --------------------------


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    #: "string" (NUL included), "bytes", "size" (u32), "count" (u8) or "lua" (a table)
    kind: str


class _Short(Exception):
    pass


def header_fields(stream: bytes) -> list[Field]:
    """The header's fields in order, as far as they can be read (a walk that
    stops at the first field the bytes cannot hold). Complete when the last
    one is ``random seed``."""
    fields: list[Field] = []
    position = 0

    def take(name: str, size: int, kind: str) -> bytes:
        nonlocal position
        if size > len(stream) - position:
            raise _Short
        fields.append(Field(name, position, size, kind))
        position += size
        return stream[position - size : position]

    def string(name: str) -> None:
        end = stream.find(b"\0", position)
        if end < 0:
            raise _Short
        take(name, end + 1 - position, "string")

    def sized(name: str) -> None:
        (size,) = struct.unpack("<I", take(f"{name} size", 4, "size"))
        take(name, size, "lua")

    try:
        string("game version")
        take("separator after the game version", 3, "bytes")
        string("replay version and map")
        take("separator after the map", 4, "bytes")
        sized("mods")
        sized("scenario")
        players = take("player count", 1, "count")[0]
        for index in range(players):
            string(f"player {index} name")
            take(f"player {index} timeouts", 4, "bytes")
        take("cheats", 1, "count")
        armies = take("army count", 1, "count")[0]
        for index in range(armies):
            sized(f"army {index}")
            if take(f"army {index} source", 1, "count")[0] != 255:
                take(f"army {index} source byte", 1, "bytes")
        take("random seed", 4, "bytes")
    except _Short:
        pass
    return fields


def header_end(stream: bytes) -> int | None:
    """Where the body starts, when the header is complete."""
    fields = header_fields(stream)
    if fields and fields[-1].name == "random seed":
        return fields[-1].offset + fields[-1].size
    return None


def accepted_header_end(stream: bytes) -> int | None:
    """:func:`header_end` for a header the server takes: within 1 MiB, a
    game version, and a replay version field that starts with ``Replay v``
    (``faf_replay/replay/replay_header.py``); None for any other."""
    fields = header_fields(stream)
    end = header_end(stream)
    if end is None or end > 1024 * 1024:
        return None
    version, replay = fields[0], fields[2]
    if version.size < 2 or not stream[replay.offset : replay.offset + replay.size].startswith(b"Replay v"):
        return None
    return end


def body(stream: bytes) -> bytes:
    end = header_end(stream)
    return stream[end:] if end is not None else b""


def saved_problem(replay: bytes | None, received: list[bytes], quorum: int, stalled: bool) -> str | None:
    """What is wrong with the replay saved for a fuzzed game whose uploads
    differ (None: nothing), from what the server received of each upload (its
    log says how many bytes) and its quorum.

    An upload that completed a header the server takes makes a replay, so one
    must be there; its header is one upload's and its body a prefix of one
    upload's body, never a splice. Unless the merge stopped waiting for a
    stalled voter (``stalled``), the body holds every byte ``quorum`` uploads
    agreed on, and when ``quorum`` uploads sent the same whole body it is
    saved whole: that body, or a longer upload that goes on from it.
    """
    taken = [stream for stream in received if accepted_header_end(stream) is not None]
    if replay is None or not taken:
        if replay is not None:
            return f"saved {len(replay)} bytes, though no upload completed a header the server takes"
        return f"nothing saved, though {len(taken)} upload(s) completed a replay header" if taken else None
    bodies = [body(stream) for stream in taken]
    end = header_end(replay)
    if end is None or replay[:end] not in {stream[: header_end(stream)] for stream in taken}:
        return f"the saved header ({end} bytes) is no upload's"
    saved = replay[end:]
    if not any(whole.startswith(saved) for whole in bodies):
        return f"the saved body ({len(saved)} bytes) is no prefix of an upload's body"
    return None if stalled else _quorum_problem(saved, bodies, quorum)


def _quorum_problem(saved: bytes, bodies: list[bytes], quorum: int) -> str | None:
    agreed, identical = agreed_body(bodies, quorum)
    if not saved.startswith(agreed):
        return f"the saved body ({len(saved)} bytes) lacks the {len(agreed)} bytes {quorum} uploads agreed on"
    if identical and not any(whole == saved for whole in bodies if whole.startswith(agreed)):
        return f"{quorum} uploads sent the same {len(agreed)}-byte body; {len(saved)} bytes of it were saved"
    return None


def agreed_body(bodies: list[bytes], quorum: int) -> tuple[bytes, bool]:
    """The longest body prefix ``quorum`` uploads share (all of them, when
    fewer), and whether those uploads sent that very body, whole."""
    best, identical = b"", False
    for group in itertools.combinations(bodies, min(quorum, len(bodies))):
        shared = group[0][: min(_shared(group[0], other) for other in group)]
        same = all(whole == group[0] for whole in group)
        if len(shared) > len(best) or (same and len(shared) == len(best)):
            best, identical = shared, same
    return best, identical


def _shared(one: bytes, other: bytes) -> int:
    """How many bytes two bodies share from the start."""
    length = min(len(one), len(other))
    start = 0
    while start < length and one[start : start + 4096] == other[start : start + 4096]:
        start += 4096
    for position in range(start, min(start + 4096, length)):
        if one[position] != other[position]:
            return position
    return length


# -- mutations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FlipBit:
    """Flip one bit (nothing past the end)."""

    offset: int
    bit: int

    def apply(self, data: bytes) -> bytes:
        if self.offset >= len(data):
            return data
        out = bytearray(data)
        out[self.offset] ^= 1 << self.bit
        return bytes(out)


@dataclass(frozen=True)
class SetBytes:
    """Overwrite bytes from ``offset`` (never past the end)."""

    offset: int
    value: bytes

    def apply(self, data: bytes) -> bytes:
        end = min(len(data), self.offset + len(self.value))
        if self.offset >= end:
            return data
        return data[: self.offset] + self.value[: end - self.offset] + data[end:]


@dataclass(frozen=True)
class Truncate:
    """Keep the first ``length`` bytes (a player quitting, a lost connection)."""

    length: int

    def apply(self, data: bytes) -> bytes:
        return data[: self.length]


@dataclass(frozen=True)
class Insert:
    """Insert ``garbage`` before ``offset`` (at the end when past it)."""

    offset: int
    garbage: bytes

    def apply(self, data: bytes) -> bytes:
        return data[: self.offset] + self.garbage + data[self.offset :]


@dataclass(frozen=True)
class SetSize:
    """Set a u32 size field of the header (``"mods size"``, ``"scenario size"``,
    ``"army 2 size"``) to ``value``; nothing when the header has no such field."""

    field: str
    value: int

    def apply(self, data: bytes) -> bytes:
        for found in header_fields(data):
            if found.name == self.field and found.kind == "size":
                return SetBytes(found.offset, struct.pack("<I", self.value)).apply(data)
        return data


Mutation = FlipBit | SetBytes | Truncate | Insert | SetSize


def poison(offset: int) -> SetBytes:
    """``ff ff ff 7f`` at ``offset``: the known poison of the header's Lua data."""
    return SetBytes(offset, POISON)


def mutate(name: str, mutations: Sequence[Mutation] = ()) -> bytes:
    """Recording ``name`` (tests/data) with ``mutations`` applied in order."""
    data = recording(name)
    for mutation in mutations:
        data = mutation.apply(data)
    return data


# -- connections, cases, honest games -------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """One client connection of a fuzzed game.

    It sends its opening (the valid ``<kind>/<game>/<name>\\0``, or ``header``
    with ``{game}`` standing for the game's id), then the recording with its
    mutations (if any), then ``garbage``; only the first ``cut`` bytes of all
    that when ``cut`` is set. It writes ``pieces`` (cycled) one per ``pause``
    seconds, over TCP or a WebSocket, starting ``delay`` seconds into the
    case; then it closes (``then="close"``) or waits for the server to close
    it (``"wait"``: a silent peer; closed by the client when the batch ends).
    """

    kind: str = "P"
    header: bytes | None = None
    recording: str | None = None
    mutations: tuple[Mutation, ...] = ()
    garbage: bytes = b""
    cut: int | None = None
    then: str = "close"
    pieces: tuple[int, ...] = (4096,)
    pause: float = 0.0
    transport: str = "tcp"
    delay: float = 0.0
    name: str = "fuzz.SCFAreplay"

    def opening(self, game_id: int) -> bytes:
        if self.header is not None:
            return self.header.replace(b"{game}", str(game_id).encode())
        return f"{self.kind}/{game_id}/{self.name}\0".encode()

    def data(self, game_id: int) -> bytes:
        """Everything this connection sends."""
        stream = mutate(self.recording, self.mutations) if self.recording is not None else b""
        data = self.opening(game_id) + stream + self.garbage
        return data if self.cut is None else data[: self.cut]


@dataclass(frozen=True)
class Case:
    """One fuzzed game: its connections, all for the same (fuzz) game id."""

    connections: tuple[Connection, ...]


@dataclass(frozen=True)
class Uploading:
    """How one honest uploader sends: pieces (cycled), pause, transport."""

    pieces: tuple[int, ...] = (1000,)
    pause: float = 0.005
    transport: str = "tcp"


@dataclass(frozen=True)
class Honest:
    """A real game: ``recording`` uploaded whole by each of ``uploaders``
    (for ``diverging_1``, its six real uploads), watched by ``watchers``
    (their transports), and maybe joined by an ``intruder``: one more upload of
    the game, mutated, that starts once the game has its replay header."""

    recording: str
    uploaders: tuple[Uploading, ...] = (Uploading(), Uploading())
    watchers: tuple[str, ...] = ("tcp",)
    intruder: Connection | None = None

    def streams(self) -> list[bytes]:
        """What each uploader sends after its connection header."""
        if self.recording == DIVERGING_GAME:
            return [recording(name) for name in DIVERGING]
        return [recording(self.recording)] * len(self.uploaders)

    def uploads(self) -> list[tuple[Uploading, bytes]]:
        streams = self.streams()
        plans = [self.uploaders[i % len(self.uploaders)] for i in range(len(streams))]
        return list(zip(plans, streams, strict=True))

    def accepts(self, saved: bytes) -> bool:
        """Whether ``saved`` is this game's replay, byte for byte: the recording,
        or for diverging_1 one of its headers with upload 5's body (docs/protocol.md,
        "Merging the uploads")."""
        if self.recording == DIVERGING_GAME:
            headers = {recording(name)[: header_end(recording(name))] for name in DIVERGING}
            end = header_end(saved)
            return end is not None and saved[:end] in headers and saved[end:] == body(recording(DIVERGING[5]))
        return saved == recording(self.recording)


@dataclass(frozen=True)
class Batch:
    """What one round sends to the server at once."""

    honest: tuple[Honest, ...]
    cases: tuple[Case, ...]


# -- hypothesis strategies -------------------------------------------------------------------

_FIELDS: dict[str, list[Field]] = {}


def fields_of(name: str) -> list[Field]:
    if name not in _FIELDS:
        _FIELDS[name] = header_fields(recording(name))
    return _FIELDS[name]


def _header_size(name: str) -> int:
    end = header_end(recording(name))
    assert end is not None, name
    return end


@st.composite
def _poison_in_lua(draw: Any, name: str) -> SetBytes:
    """``ff ff ff 7f`` somewhere inside one of the header's Lua tables."""
    table = draw(st.sampled_from([f for f in fields_of(name) if f.kind == "lua" and f.size >= 4]))
    return poison(table.offset + draw(st.integers(0, table.size - 4)))


@st.composite
def _cut_at_a_field(draw: Any, name: str) -> Truncate:
    """A cut inside or at the edge of one of the header's fields."""
    place = draw(st.sampled_from(fields_of(name)))
    return Truncate(place.offset + draw(st.integers(0, place.size)))


def mutations_of(name: str) -> st.SearchStrategy[Mutation]:
    """One mutation of recording ``name``, placed by its header's fields."""
    size = len(recording(name))
    header = _header_size(name)
    sizes = [f.name for f in fields_of(name) if f.kind == "size"]
    in_header = st.integers(0, header - 1)
    offset = st.one_of(in_header, st.integers(0, size - 1))
    return st.one_of(
        st.builds(FlipBit, offset, st.integers(0, 7)),
        st.builds(SetBytes, in_header, st.binary(min_size=1, max_size=8)),
        _poison_in_lua(name),
        st.builds(poison, st.integers(0, header - 4)),
        st.builds(SetSize, st.sampled_from(sizes), st.sampled_from(HUGE_SIZES) | st.integers(0, 2**32 - 1)),
        _cut_at_a_field(name),
        st.builds(Truncate, st.integers(0, size)),
        st.builds(Insert, offset, st.binary(min_size=1, max_size=64)),
        st.builds(Insert, st.just(size), st.binary(min_size=1, max_size=4096)),  # appended garbage
    )


@st.composite
def mutated(draw: Any) -> tuple[str, tuple[Mutation, ...]]:
    """A recording and one to three mutations of it."""
    name = draw(st.sampled_from(ALL))
    return name, tuple(draw(st.lists(mutations_of(name), min_size=1, max_size=3)))


#: Connection headers that are wrong in one way each (docs/protocol.md, "Connection
#: header"), ``{game}`` the case's id.
BAD_HEADERS = (
    b"Q/{game}/x\0",
    b"p/{game}/x\0",
    b"P/{game}x/y\0",
    b"P/-{game}/x\0",
    b"P/+{game}/x\0",
    b"P/ {game}/x\0",
    b"P/{game}\0",
    b"P//x\0",
    b"P/{game}/\xff\xfe.SCFAreplay\0",
    b"G/{game}/\xc3\0",
    b"P/18446744073709551616/x\0",
    b"P/\xd9\xa1\xd9\xa2/x\0",
    b"P/{game}/" + b"a" * 1100 + b"\0",
    b"G/{game}/" + b"/" * 1021 + b"\0",
    b"P/{game}/" + b"a" * 1100,
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"\0\0",
    b"P\0",
    b"/P",
)
_NAMES_A_GAME_OF_OURS = re.compile(rb"^[PG]/0*[12][0-9]{7}/")


def _not_ours(header: bytes) -> bool:
    """A random opening must not name one of the run's games (their oracles
    know every upload): ``{game}`` is how a header names its own case's game."""
    return _NAMES_A_GAME_OF_OURS.match(header) is None


def random_headers() -> st.SearchStrategy[bytes]:
    kinds = st.sampled_from([b"P/", b"G/", b"P", b"G", b"", b"X/"])
    ids = st.one_of(st.just(b"{game}"), st.binary(max_size=12), st.from_regex(rb"\A[0-9]{0,25}\Z"))
    names = st.binary(max_size=40).map(lambda name: name.replace(b"\0", b""))
    built = st.builds(
        lambda k, i, n, end: k + i + b"/" + n + end, kinds, ids, names, st.sampled_from([b"\0", b""])
    )
    return st.one_of(st.sampled_from(BAD_HEADERS), built, st.binary(max_size=64)).filter(_not_ours)


_pieces = st.lists(st.integers(1, 8192), min_size=1, max_size=4).map(tuple)
_pauses = st.sampled_from([0.0, 0.002, 0.01])
_transports = st.sampled_from(["tcp", "tcp", "ws"])
_delays = st.sampled_from([0.0, 0.0, 0.05, 0.3])


@st.composite
def connections(draw: Any) -> Connection:
    """One connection of a fuzzed game (see :class:`Connection`)."""
    common = {
        "pieces": draw(_pieces),
        "pause": draw(_pauses),
        "transport": draw(_transports),
        "delay": draw(_delays),
    }
    shape = draw(
        st.sampled_from(
            [
                "mutated upload",
                "mutated upload",
                "mutated upload",
                "cut short",
                "random header",
                "garbage after the header",
                "watcher",
                "tiny",
            ]
        )
    )
    if shape == "mutated upload":
        name, mutations = draw(mutated())
        then = draw(st.sampled_from(["close", "close", "wait"]))
        return Connection("P", None, name, mutations, then=then, **common)
    if shape == "cut short":  # a half-sent connection header, or a half-sent replay header
        name = draw(st.sampled_from(ALL))
        kind = draw(st.sampled_from(["P", "G"]))
        opening = len(Connection(kind).opening(FUZZ_IDS))
        cut = draw(st.integers(2, opening - 1) | st.integers(opening, opening + _header_size(name)))
        then = draw(st.sampled_from(["close", "wait"]))
        return Connection(kind, None, name if kind == "P" else None, cut=cut, then=then, **common)
    if shape == "random header":
        header = draw(random_headers())
        name = draw(st.none() | st.sampled_from(ALL))
        then = draw(st.sampled_from(["close", "wait"]))
        return Connection("P", header, name, then=then, **common)
    if shape == "garbage after the header":
        kind = draw(st.sampled_from(["P", "P", "G"]))
        garbage = draw(st.binary(min_size=1, max_size=4096))
        return Connection(
            kind, None, None, garbage=garbage, then=draw(st.sampled_from(["close", "wait"])), **common
        )
    if shape == "watcher":
        return Connection("G", None, None, then="wait", **common)
    # fewer than 2 bytes, then closed: a player leaving the lobby
    return Connection("P", draw(st.sampled_from([b"", b"P", b"G", b"x"])), None, then="close", **common)


@st.composite
def twins(draw: Any) -> Case:
    """A game whose players all send the same mutated stream (a corrupt header
    every player has, say), and a watcher: saved byte for byte, or not at all."""
    name, mutations = draw(mutated())
    uploads = [
        Connection(
            "P", None, name, mutations, pieces=draw(_pieces), pause=draw(_pauses), transport=draw(_transports)
        )
        for _ in range(draw(st.integers(2, 3)))
    ]
    watcher = Connection("G", then="wait", transport=draw(_transports), delay=0.05)
    return Case((*uploads, watcher))


@st.composite
def outvoted(draw: Any) -> Case:
    """Two players send a real recording, a third the same with one bit flipped
    in the last quarter of its body (a desync): the two are a quorum, and the
    replay must be theirs, whole. The two send their header at once, then
    their body at 50 KB/s; the third joins 0.4 s later (the two are voting by
    then) and sends everything at once, so that it is ahead of them at the
    flipped bit by more than the delay: a merge that let one upload decide
    alone would take the third's."""
    name = draw(st.sampled_from(["example", "22373098"]))
    stream = recording(name)
    start = header_end(stream)
    assert start is not None
    flipped = draw(st.integers(start + (len(stream) - start) * 3 // 4, len(stream) - 1))
    pieces = (start, *(500,) * 99)
    honest = [
        Connection("P", None, name, (), pieces=pieces, pause=0.01, transport=draw(_transports))
        for _ in range(2)
    ]
    flip = FlipBit(flipped, draw(st.integers(0, 7)))
    intruder = Connection("P", None, name, (flip,), pieces=(8192,), transport=draw(_transports), delay=0.4)
    watcher = Connection("G", then="wait", transport=draw(_transports), delay=0.05)
    return Case((*honest, intruder, watcher))


def cases() -> st.SearchStrategy[Case]:
    mixed = st.lists(connections(), min_size=1, max_size=4).map(lambda found: Case(tuple(found)))
    return st.one_of(mixed, mixed, mixed, twins(), outvoted())


def _honest_body(honest_stream: bytes, intruder: bytes) -> bool:
    """The intruder cannot win against the honest uploaders: its body is no
    longer copy of theirs (a longer stream alone supplies the end of a replay
    once the others have ended, docs/protocol.md; that is by design, not a bug)."""
    ours, theirs = body(honest_stream), body(intruder)
    return not (len(theirs) > len(ours) and theirs.startswith(ours))


@st.composite
def honest_games(draw: Any) -> Honest:
    name = draw(st.sampled_from(["example", "8805603", "22373098", "diverging_1/5", DIVERGING_GAME]))
    # Paced to finish its replay header well within the server's --replay-header-timeout (2 s).
    pauses = st.sampled_from([0.0, 0.002, 0.005])
    uploading = st.builds(
        Uploading, st.lists(st.integers(64, 2048), min_size=1, max_size=3).map(tuple), pauses, _transports
    )
    count = 6 if name == DIVERGING_GAME else draw(st.integers(2, 3))
    uploaders = tuple(draw(st.lists(uploading, min_size=count, max_size=count)))
    watchers = tuple(draw(st.lists(_transports, min_size=1, max_size=2)))
    intruder = None
    if name != DIVERGING_GAME and draw(st.integers(0, 3)) == 0:
        mutations = tuple(draw(st.lists(mutations_of(name), min_size=1, max_size=2)))
        stream = mutate(name, mutations)
        if _honest_body(recording(name), stream):
            intruder = Connection(
                "P", None, name, mutations, pieces=draw(_pieces), transport=draw(_transports)
            )
    return Honest(name, uploaders, watchers, intruder)


def batches(honest: int = 2, fuzzed: int = 10) -> st.SearchStrategy[Batch]:
    return st.builds(
        Batch,
        st.lists(honest_games(), min_size=honest, max_size=honest).map(tuple),
        st.lists(cases(), min_size=fuzzed, max_size=fuzzed).map(tuple),
    )


class _without_local_constants(contextlib.ContextDecorator):
    """Hypothesis draws now and then a constant it found in the source of the
    project's modules loaded so far (not in tests). Then a draw depends on which
    modules the run imported, and on any edit to them: the whole suite drew
    other cases than ``trial tests.system.test_fuzz`` for the same seed, and a CI
    finding could not be run again alone. Within :func:`draw` that pool is
    empty (and the cache built from it cleared before and after), so a seed
    always names the same cases.

    Hypothesis offers no setting for this: this is the one place the tests
    reach into its internals (``providers._get_local_constants`` and
    ``CONSTANTS_CACHE``, Hypothesis 6.131 on). ``Mutations.
    test_draw_does_not_depend_on_loaded_modules`` fails if they move.
    """

    def __enter__(self) -> None:
        self._original = providers._get_local_constants
        providers._get_local_constants = Constants
        providers.CONSTANTS_CACHE.cache.clear()

    def __exit__(self, *exc: object) -> None:
        providers._get_local_constants = self._original
        providers.CONSTANTS_CACHE.cache.clear()


def draw(strategy: st.SearchStrategy[Any], count: int, seed: int) -> list[Any]:
    """``count`` examples of ``strategy``, the same ones for the same seed.

    Hypothesis refuses ``@given`` on a test that returns a Deferred, and a
    server round costs seconds: so the examples are drawn here, synchronously,
    by a ``@given`` function that only collects them (``@seed``, no example
    database, the generate phase only), and the server then runs them in
    batches. Hypothesis' own shrinking is used where the property is pure
    (``tests/system/test_fuzz.py``, ``Mutations``); a server-level finding is shrunk by
    ``benchmarks/fuzz.py``, and every case prints as the Python that rebuilds it.
    """
    found: list[Any] = []

    @_without_local_constants()
    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: Any) -> None:
        if len(found) < count:
            found.append(example)

    collect()
    return found


# -- simpler examples (to shrink a server-level finding, which only a server can re-run) ------


def simpler_connections(connection: Connection) -> list[Connection]:
    """Each a step simpler than ``connection``, simplest steps first."""
    out = []
    for index in range(len(connection.mutations)):
        out.append(
            replace(connection, mutations=connection.mutations[:index] + connection.mutations[index + 1 :])
        )
    defaults = Connection()
    for name in ("garbage", "cut", "header", "transport", "then", "delay", "pause", "pieces"):
        if getattr(connection, name) != getattr(defaults, name):
            out.append(replace(connection, **{name: getattr(defaults, name)}))
    if connection.recording not in (None, "8805603"):
        out.append(replace(connection, recording="8805603"))
    for index, mutation in enumerate(connection.mutations):
        for smaller in _simpler_mutations(mutation):
            mutations = (*connection.mutations[:index], smaller, *connection.mutations[index + 1 :])
            out.append(replace(connection, mutations=mutations))
    if len(connection.garbage) > 1:
        out.append(replace(connection, garbage=connection.garbage[: len(connection.garbage) // 2]))
    return out


def _simpler_mutations(mutation: Mutation) -> list[Mutation]:
    if isinstance(mutation, Insert) and len(mutation.garbage) > 1:
        return [replace(mutation, garbage=mutation.garbage[: len(mutation.garbage) // 2])]
    if isinstance(mutation, SetBytes) and len(mutation.value) > 1 and mutation.value != POISON:
        return [replace(mutation, value=mutation.value[:1])]
    return []


def simpler_cases(case: Case) -> list[Case]:
    """Each a step simpler than ``case``: one connection fewer, or one simpler."""
    out = []
    items = case.connections
    if len(items) > 1:
        out += [Case(items[:i] + items[i + 1 :]) for i in range(len(items))]
    for index, connection in enumerate(items):
        out += [
            Case((*items[:index], simpler, *items[index + 1 :]))
            for simpler in simpler_connections(connection)
        ]
    return out


def simpler_batches(batch: Batch) -> list[Batch]:
    """Each a step simpler than ``batch``: fewer honest games or cases, or a simpler case."""
    out = []
    for index in range(len(batch.honest)):
        out.append(replace(batch, honest=batch.honest[:index] + batch.honest[index + 1 :]))
    cases_ = batch.cases
    if len(cases_) > 1:  # halves first: a batch of ten gets small fast
        half = len(cases_) // 2
        out += [replace(batch, cases=cases_[:half]), replace(batch, cases=cases_[half:])]
    out += [replace(batch, cases=cases_[:i] + cases_[i + 1 :]) for i in range(len(cases_))]
    for index, case in enumerate(cases_):
        out += [replace(batch, cases=(*cases_[:index], c, *cases_[index + 1 :])) for c in simpler_cases(case)]
    return out


__all__ = [
    "ALL",
    "DIVERGING_GAME",
    "FUZZ_IDS",
    "HONEST_IDS",
    "POISON",
    "Batch",
    "Case",
    "Connection",
    "Field",
    "FlipBit",
    "Honest",
    "Insert",
    "Mutation",
    "SetBytes",
    "SetSize",
    "Truncate",
    "Uploading",
    "accepted_header_end",
    "batches",
    "body",
    "cases",
    "connections",
    "draw",
    "fields_of",
    "header_end",
    "header_fields",
    "honest_games",
    "mutate",
    "mutated",
    "mutations_of",
    "poison",
    "random_headers",
    "simpler_batches",
    "simpler_cases",
    "simpler_connections",
    "twins",
]

"""The quorum merge: many uploads of one game become one replay (docs/protocol.md, "Merging the uploads").

Every uploader sends its own copy of the game's body. The copies agree for most
of their length, end at different points, and may diverge. :class:`QuorumMerge`
grows one canonical body that is always a prefix of one uploaded stream (never a
splice of several):

* Bytes are committed only when ``quorum`` streams agree on them, or when every
  stream that could still vote already does (a single uploader, or the others
  have left or are no longer waited for).
* Where the streams disagree, the bigger group wins, ties going to the group
  with the longest stream; no decision is taken while the streams still waiting
  ("pending voters") could make another group as big. Losers are dropped for
  good.
* A stream that ends early and agrees so far just stops voting.

Decisions are lazy: :meth:`QuorumMerge.advance` takes a limit (the delayed
length the watchers may see), and nothing beyond it is decided, so every
decision is taken with as much lookahead as the delay gives. Comparisons are
cached per stream, so each byte is compared about once however often
``advance`` runs.

:class:`StallRule` is our fix of the worst weakness of the servers before us: a connected
uploader the merge waits for (silent, or sending too slowly to catch up) is
waited for at most ``timeout`` seconds, then it stops voting until its data
reaches the merge point again. Pure logic, no Twisted.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar, overload

_COMPARE_STEP = 64 * 1024  # under malloc's mmap threshold: slices stay cheap


class Body(Protocol):
    """An upload's body as the merge reads it: its length, a byte, a slice."""

    def __len__(self) -> int: ...

    @overload
    def __getitem__(self, key: int) -> int: ...

    @overload
    def __getitem__(self, key: slice) -> bytes | bytearray: ...


class MergeStream(Protocol):
    """What the merge needs to know of an upload."""

    @property
    def body(self) -> Body: ...

    @property
    def ended(self) -> bool:
        """No more bytes will come."""
        ...

    @property
    def voting(self) -> bool:
        """Worth waiting for while behind: connected, header complete, not stalled."""
        ...


def common_prefix(a: Body, b: Body, start: int, end: int) -> int:
    """The first index in ``[start, end)`` where ``a`` and ``b`` differ, or ``end``.

    Compares in bounded slices (C ``memcmp``), then bisects inside the slice
    that differs.
    """
    lo = start
    while lo < end:
        hi = min(end, lo + _COMPARE_STEP)
        if a[lo:hi] == b[lo:hi]:
            lo = hi
            continue
        while hi - lo > 1:  # a[.. lo] agrees, [lo, hi) holds a difference
            mid = (lo + hi) // 2
            if a[lo:mid] == b[lo:mid]:
                lo = mid
            else:
                hi = mid
        return lo
    return end


#: The uploads one merge reads: any one kind of :class:`MergeStream`.
S = TypeVar("S", bound=MergeStream)


class QuorumMerge(Generic[S]):
    """The canonical body of one game, grown from its uploads."""

    def __init__(self, quorum: int) -> None:
        if quorum < 1:
            raise ValueError("quorum must be at least 1")
        self.quorum = quorum
        #: Committed body bytes: ``canonical[:length]`` is the merged body.
        self.length = 0
        self._streams: list[S] = []
        # For each live stream, p such that body[:p] == reference.body[:p] is
        # known, and whether it is known to differ at p.
        self._agreed: dict[int, int] = {}
        self._differs: dict[int, bool] = {}
        self._reference: S | None = None
        self._dropped: list[tuple[S, int]] = []
        #: The voters the last ``advance`` stopped to wait for, and where it
        #: wanted to get to: what :class:`StallRule` watches.
        self.waiting_on: list[S] = []
        self.wanted = 0

    # -- inputs ---------------------------------------------------------------

    def add(self, stream: S) -> None:
        self._streams.append(stream)
        self._agreed[id(stream)] = 0
        self._differs[id(stream)] = False
        if self._reference is None:
            self._reference = stream

    # -- outputs --------------------------------------------------------------

    @property
    def canonical(self) -> Body:
        """A buffer whose first :attr:`length` bytes are the merged body."""
        return self._reference.body if self._reference is not None else b""

    def take_dropped(self) -> list[tuple[S, int]]:
        """Streams dropped as diverged since the last call, with the body offset."""
        dropped, self._dropped = self._dropped, []
        return dropped

    def __contains__(self, stream: object) -> bool:
        return any(s is stream for s in self._streams)

    # -- the merge ------------------------------------------------------------

    def advance(self, limit: int | None = None) -> int:
        """Commit as much as the streams allow, up to ``limit`` (``None``: no limit)."""
        self.waiting_on = []
        if self._reference is None:
            return self.length
        stop = limit if limit is not None else float("inf")
        while self.length < stop:
            self._check_all()
            ahead, pending = self._classify()
            if not ahead:
                break
            if self._reference not in ahead:
                # The reference has no more data: read on from the longest.
                self._set_reference(max(ahead, key=lambda s: len(s.body)))
                continue
            # The next point where a stream ahead ends or leaves the reference.
            event = min(self._agreed[id(s)] for s in ahead)
            if event > self.length:
                needed = min(self.quorum, len(ahead) + len(pending))
                if len(ahead) < needed:
                    # a pending voter may still confirm or contradict
                    self._wait_for(pending, int(min(event, stop)))
                    break
                self.length = int(min(event, stop))
                continue
            if not self._resolve_split(ahead, pending):
                self._wait_for(pending, self.length + 1)
                break
            # Losers dropped, maybe a new reference: check agreement again.
        self._retire_finished()
        return self.length

    def _check_all(self) -> None:
        """Extend every stream's known agreement with the reference; drop the
        streams that contradict the committed body."""
        reference = self._reference
        assert reference is not None
        ref_body = reference.body
        self._agreed[id(reference)] = len(ref_body)
        for stream in list(self._streams):
            key = id(stream)
            if stream is reference or self._differs[key]:
                continue
            known = self._agreed[key]
            end = min(len(stream.body), len(ref_body))
            if known < end:
                known = common_prefix(stream.body, ref_body, known, end)
                self._agreed[key] = known
                self._differs[key] = known < end
            if self._differs[key] and known < self.length:
                self._drop(stream, known)

    def _classify(self) -> tuple[list[S], list[S]]:
        """Streams with data past the committed length, and the voters that
        might still send some."""
        ahead = [s for s in self._streams if len(s.body) > self.length]
        pending = [s for s in self._streams if len(s.body) <= self.length and not s.ended and s.voting]
        return ahead, pending

    def _wait_for(self, pending: list[S], wanted: int) -> None:
        self.waiting_on = pending
        self.wanted = int(wanted)

    def _resolve_split(self, ahead: list[S], pending: list[S]) -> bool:
        """Streams ahead disagree at the committed length: pick a side.

        Returns False when the decision has to wait for pending voters.
        """
        position = self.length
        groups: dict[int, list[S]] = {}
        for stream in ahead:
            groups.setdefault(stream.body[position], []).append(stream)
        ranked = sorted(
            groups.values(),
            key=lambda group: (len(group), max(len(s.body) for s in group)),
            reverse=True,
        )
        best, runner_up = ranked[0], ranked[1]
        if pending and len(best) <= len(runner_up) + len(pending):
            return False
        for group in ranked[1:]:
            for stream in group:
                self._drop(stream, position)
        if self._reference not in best:
            self._set_reference(max(best, key=lambda s: len(s.body)))
        return True

    def _set_reference(self, new: S) -> None:
        """Switch the stream the canonical bytes are read from.

        A stream that agreed with the old reference up to p, and the new one
        that agreed up to q, agree with each other at least up to min(p, q).
        """
        floor = self._agreed[id(new)]
        for stream in self._streams:
            key = id(stream)
            self._agreed[key] = min(self._agreed[key], floor)
            self._differs[key] = False
        self._reference = new
        self._agreed[id(new)] = len(new.body)

    def _drop(self, stream: S, position: int) -> None:
        self._forget(stream)
        self._dropped.append((stream, position))

    def _forget(self, stream: S) -> None:
        self._streams = [s for s in self._streams if s is not stream]
        del self._agreed[id(stream)]
        del self._differs[id(stream)]

    def _retire_finished(self) -> None:
        """Ended streams wholly inside the committed body have nothing more to say."""
        for stream in list(self._streams):
            if (
                stream is not self._reference
                and stream.ended
                and len(stream.body) <= self.length
                and self._agreed[id(stream)] >= len(stream.body)
            ):
                self._forget(stream)


class StallRule(Generic[S]):
    """How long the merge waits for one voter before it stops counting it.

    Each tick, :meth:`update` is told whom the merge waited for and how far it
    wanted to get. A wait starts when a voter first holds the merge back; it
    is over when the voter's data reaches the position wanted at its start (a
    legitimately lagging uploader does that again and again) or when the voter
    is no longer waited for. A wait that lasts ``timeout`` seconds returns the
    voter, to be marked as not voting until its data passes the merge point.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._waits: dict[int, tuple[float, int]] = {}  # id(stream) -> (since, target)

    def update(self, now: float, waiting_on: list[S], wanted: int) -> list[S]:
        keys = {id(s) for s in waiting_on}
        for key in list(self._waits):
            if key not in keys:
                del self._waits[key]
        overdue = []
        for stream in waiting_on:
            since, target = self._waits.get(id(stream), (now, wanted))
            if len(stream.body) >= target:
                since, target = now, wanted  # it got there: a new, separate wait
            self._waits[id(stream)] = (since, target)
            if now - since >= self.timeout:
                overdue.append(stream)
                del self._waits[id(stream)]
        return overdue

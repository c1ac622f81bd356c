"""One game's replay, from its first uploader to its saved file.

A :class:`Game` owns the game's uploads, its merge, its delay window and its
watchers, and it is the one home of the replay's lifecycle::

    ACCEPTING ──(no uploader for `grace` s / forced end / shutdown)──▶ SAVING
    SAVING ──(file written, or saving failed)──▶ DRAINING
    DRAINING ──(last watcher gone / drain timeout)──▶ DONE

Every transition happens in :meth:`Game.end`, :meth:`Game._saved` or
:meth:`Game._finish`. Time comes from the clock passed in (the reactor, or a
``Clock`` in tests); the registry calls :meth:`Game.tick` once per sample
interval, and that is the only place merging and publishing happen.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from faf_replay import metrics
from faf_replay.delay import DelayWindow
from faf_replay.merge import QuorumMerge, StallRule
from faf_replay.metadata import login_from_name
from faf_replay.settings import Settings
from faf_replay.stream import UploadStream

log = Logger()

#: Bytes per slice handed to watchers; slices are shared between watchers.
READ_CHUNK = 64 * 1024


class State(enum.Enum):
    ACCEPTING = "accepting"
    SAVING = "saving"
    DRAINING = "draining"
    DONE = "done"


class Uploader(Protocol):
    stream: UploadStream

    def close(self) -> None: ...


class Watcher(Protocol):
    def game_updated(self) -> None:
        """More of the replay can be sent, or the game finished."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class FinishedReplay:
    """What saving needs to know of a game whose write phase is over."""

    game_id: int
    header: bytes | None
    body: bytes
    recorder: str
    started_at: float
    ended_at: float


SaveFunction = Callable[[FinishedReplay], Deferred]


class Game:
    def __init__(
        self,
        game_id: int,
        settings: Settings,
        clock: IReactorTime,
        save: SaveFunction,
        on_done: Callable[[Game], None],
    ) -> None:
        self.game_id = game_id
        self.state = State.ACCEPTING
        self._settings = settings
        self._clock = clock
        self._save = save
        self._on_done = on_done
        self.started_at = clock.seconds()

        self.header: bytes | None = None
        #: Body bytes watchers may have; grows at ticks, all of it once finished.
        self.visible = 0
        #: No more bytes will become visible.
        self.finished = False
        #: Login of the first uploader, as FAF names the replay's recorder.
        self.recorder: str | None = None

        self._merge = QuorumMerge(settings.quorum)
        self._stall_rule = StallRule(settings.stall_timeout)
        self._window = DelayWindow(settings.delay)
        self._longest = 0
        self._uploads: set[Uploader] = set()
        self._streams: list[UploadStream] = []
        self._watchers: set[Watcher] = set()
        self._slices: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._save_waiters: list[Deferred] = []
        # A game nobody uploads to ends like one everybody left.
        self._grace_call: IDelayedCall | None = self._start_grace()
        self._drain_call: IDelayedCall | None = None
        self._forced_call: IDelayedCall | None = clock.callLater(settings.forced_end, self.end, "forced end")

    def __repr__(self) -> str:
        return f"<Game {self.game_id} {self.state.value}>"

    # -- uploaders ------------------------------------------------------------

    def add_uploader(self, uploader: Uploader) -> bool:
        """Join an uploader; False once the write phase is over."""
        if self.state is not State.ACCEPTING:
            return False
        if self.recorder is None:
            self.recorder = login_from_name(uploader.stream.name)
        self._uploads.add(uploader)
        self._streams.append(uploader.stream)
        self._merge.add(uploader.stream)
        if self._grace_call is not None:
            self._grace_call.cancel()
            self._grace_call = None
        return True

    def header_complete(self, stream: UploadStream) -> None:
        """An upload finished its replay header; the first one becomes the game's."""
        if self.header is None and stream.header is not None:
            self.header = stream.header
            self._notify_watchers()

    def uploader_left(self, uploader: Uploader) -> None:
        uploader.stream.ended = True
        if uploader not in self._uploads:
            return
        self._uploads.discard(uploader)
        if self.state is State.ACCEPTING and not self._uploads:
            self._grace_call = self._start_grace()

    def _start_grace(self) -> IDelayedCall:
        grace = self._settings.grace
        return self._clock.callLater(grace, self.end, f"no uploader for {grace:g} s")

    @property
    def uploader_count(self) -> int:
        return len(self._uploads)

    # -- watchers -------------------------------------------------------------

    def add_watcher(self, watcher: Watcher) -> bool:
        """Join a watcher; False once the replay is saved."""
        if self.state not in (State.ACCEPTING, State.SAVING):
            return False
        self._watchers.add(watcher)
        return True

    def remove_watcher(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        if self.state is State.DRAINING and not self._watchers:
            self._finish()

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def read(self, start: int, end: int) -> bytes:
        """Visible body bytes ``[start, end)``, at most up to the next chunk boundary.

        Recent slices are kept so that watchers at the same place share one
        copy of the bytes.
        """
        end = min(end, self.visible, (start // READ_CHUNK + 1) * READ_CHUNK)
        key = (start, end)
        data = self._slices.get(key)
        if data is None:
            data = bytes(self._merge.canonical[start:end])
            self._slices[key] = data
            if len(self._slices) > 8:
                self._slices.popitem(last=False)
        return data

    def _notify_watchers(self) -> None:
        for watcher in list(self._watchers):
            watcher.game_updated()

    # -- time -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Sample the uploads, merge what the delay allows, publish it."""
        if self.state is not State.ACCEPTING:
            return
        for stream in self._streams:
            self._longest = max(self._longest, len(stream.body))
        self._window.record(now, self._longest)
        limit = self._window.limit(now) if self._uploads else None
        self._advance(limit)
        if self._apply_stall_rule(now):
            self._advance(limit)

    def _apply_stall_rule(self, now: float) -> bool:
        """Stop waiting for uploads that held the merge back too long; True if any."""
        merge = self._merge
        for stream in self._streams:
            if stream.stalled and len(stream.body) > merge.length:
                stream.stalled = False
                log.info(
                    "game {game_id}: upload {name!r} caught up after a stall; it votes again",
                    game_id=self.game_id,
                    name=stream.name,
                )
        overdue = self._stall_rule.update(now, merge.waiting_on, merge.wanted)
        for stream in overdue:
            assert isinstance(stream, UploadStream)
            stream.stalled = True
            metrics.stalled_uploads.inc()
            log.warn(
                "game {game_id}: upload {name!r} held the replay back for {timeout:g} s; "
                "no longer waiting for it",
                game_id=self.game_id,
                name=stream.name,
                timeout=self._stall_rule.timeout,
            )
        return bool(overdue)

    def _advance(self, limit: int | None, visible_cap: int | None = None) -> None:
        """Merge up to ``limit`` and show watchers what was merged, or at most ``visible_cap``."""
        merge = self._merge
        merge.advance(limit)
        for stream, position in merge.take_dropped():
            assert isinstance(stream, UploadStream)
            stream.drop()
            metrics.diverged_uploads.inc()
            log.warn(
                "game {game_id}: upload {name!r} diverged at body byte {position}; its data is discarded",
                game_id=self.game_id,
                name=stream.name,
                position=position,
            )
        # Ended uploads the merge is done with are let go, with their bytes.
        self._streams = [s for s in self._streams if not s.ended or s in merge]
        visible = merge.length if visible_cap is None else min(merge.length, visible_cap)
        if visible > self.visible:
            self.visible = visible
            self._notify_watchers()

    # -- lifecycle ------------------------------------------------------------

    def end(self, reason: str) -> Deferred:
        """End the write phase and save; fires when saving is over.

        Safe to call in any state: later calls just wait for the same save.
        """
        waiter: Deferred = Deferred()
        if self.state is not State.ACCEPTING:
            if self.state is State.SAVING:
                self._save_waiters.append(waiter)
                return waiter
            return succeed(None)
        self._save_waiters.append(waiter)
        self.state = State.SAVING
        for call in (self._grace_call, self._forced_call):
            if call is not None and call.active():
                call.cancel()
        self._grace_call = self._forced_call = None
        # Uploaders still connected mean the game may still be running (forced
        # end, shutdown): watchers then keep their delay, only the file gets all.
        still_live = bool(self._uploads)
        cap = self._window.limit(self._clock.seconds()) if still_live else None
        for uploader in list(self._uploads):
            uploader.stream.ended = True
            uploader.close()
        self._uploads.clear()

        self._advance(None, cap)
        self.finished = True
        ended_at = self._clock.seconds()
        log.info(
            "game {game_id}: write phase over ({reason}) after {duration:.0f} s, {length} body bytes merged",
            game_id=self.game_id,
            reason=reason,
            duration=ended_at - self.started_at,
            length=self._merge.length,
        )
        self._notify_watchers()
        replay = FinishedReplay(
            game_id=self.game_id,
            header=self.header,
            body=bytes(self._merge.canonical[: self._merge.length]),
            recorder=self.recorder or "",
            started_at=self.started_at,
            ended_at=ended_at,
        )
        self._save(replay).addBoth(self._saved)
        return waiter

    def _saved(self, result: object) -> None:
        if isinstance(result, Failure):
            log.failure("game {game_id}: saving failed", result, game_id=self.game_id)
        self.state = State.DRAINING
        metrics.finished_replays.inc()
        waiters, self._save_waiters = self._save_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        if not self._watchers:
            self._finish()
        else:
            self._drain_call = self._clock.callLater(self._settings.drain_timeout, self.close_watchers)

    def close_watchers(self) -> None:
        for watcher in list(self._watchers):
            watcher.close()

    def _finish(self) -> None:
        if self.state is State.DONE:
            return
        self.state = State.DONE
        if self._drain_call is not None and self._drain_call.active():
            self._drain_call.cancel()
        self._drain_call = None
        self._slices.clear()
        self._on_done(self)

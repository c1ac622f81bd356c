"""One game's replay, from its first uploader to its saved file.

A :class:`Game` owns the game's uploads, its merge, its delay window and its
watchers, and it is the one home of the replay's lifecycle::

    ACCEPTING ──(no upload holding it for `grace` s / forced end / shutdown)──▶ SAVING
    SAVING ──(file written, already there, or nothing to save)──▶ DRAINING
    SAVING ──(the vault refused)──▶ SAVING again after a backoff; the spool keeps the data
    DRAINING ──(last watcher gone / drain timeout)──▶ DONE

Every transition happens in :meth:`Game.end`, :meth:`Game._saved` or
:meth:`Game._finish`. Time comes from the clock passed in (the reactor, or a
``Clock`` in tests); the registry calls :meth:`Game.tick` once per sample
interval, and that is the only place merging and publishing happen; whom the
game waits for then (the stall and silence rules) is ``waiting.py``'s to say. With a
spool, every upload is on disk as it arrives and the game's spool folder is
removed only once its replay is safe.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from faf_replay import metrics
from faf_replay.delay import DelayWindow
from faf_replay.finished import FinishedReplay, SaveFunction, SaveOutcome
from faf_replay.merge import QuorumMerge
from faf_replay.metadata import login_from_name
from faf_replay.settings import Settings
from faf_replay.spool import GameSpool
from faf_replay.stream import RawStore, UploadStream
from faf_replay.waiting import Waiting

log = Logger()

#: Bytes per slice handed to watchers; slices are shared between watchers.
READ_CHUNK = 64 * 1024
#: Seconds before the first retry of a save the vault refused; doubles up to the maximum.
SAVE_RETRY_FIRST = 5.0
SAVE_RETRY_MAX = 300.0
#: Saves that fail by the data itself before the game goes to quarantine.
SAVE_ATTEMPTS_BROKEN = 3


class State(enum.Enum):
    ACCEPTING = "accepting"
    SAVING = "saving"
    DRAINING = "draining"
    DONE = "done"


class Uploader(Protocol):
    stream: UploadStream

    def close(self) -> None: ...

    def resume(self) -> None:
        """Read again: called at the tick after the upload paused itself."""

    def drain(self) -> None:
        """Read what waits in the socket now: the write phase is ending."""


class Watcher(Protocol):
    def game_updated(self) -> None:
        """More of the replay can be sent, or the game finished."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Refusal:
    """Why a connection cannot join a game: a metric label and words for the log."""

    label: str
    detail: str


class Game:
    def __init__(
        self,
        game_id: int,
        settings: Settings,
        clock: IReactorTime,
        save: SaveFunction,
        on_done: Callable[[Game], None],
        *,
        spool: GameSpool | None = None,
        started_at: float | None = None,
    ) -> None:
        self.game_id = game_id
        self.state = State.ACCEPTING
        self._settings = settings
        self._clock = clock
        self._save = save
        self._on_done = on_done
        self.spool = spool
        self.started_at = clock.seconds() if started_at is None else started_at

        self.header: bytes | None = None
        #: Body bytes watchers may have; grows at ticks, all of it once finished.
        self.visible = 0
        #: No more bytes will become visible.
        self.finished = False
        #: Login of the first uploader, as FAF names the replay's recorder.
        self.recorder: str | None = None

        self._merge: QuorumMerge[UploadStream] = QuorumMerge(settings.quorum)
        self._waiting = Waiting(game_id, settings)
        #: Uploads of this game that have left (recovered ones included).
        self._left = 0
        self._window = DelayWindow(settings.delay)
        self._longest = 0
        self._first_body_at: float | None = None
        self._uploads: set[Uploader] = set()
        self._upload_count = 0
        self._paused: list[Uploader] = []
        self._streams: list[UploadStream] = []
        self._watchers: set[Watcher] = set()
        self._peak_watchers = 0
        self._slices: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._save_waiters: list[Deferred] = []
        self._replay: FinishedReplay | None = None
        self._recovered = False
        self._retry_call: IDelayedCall | None = None
        self._retry_delay: float | None = SAVE_RETRY_FIRST
        self._broken = 0  # saves failed by the data (the spool keeps the count across restarts)
        # A game nobody uploads to ends like one everybody left.
        self._grace_call: IDelayedCall | None = self._start_grace()
        self._drain_call: IDelayedCall | None = None
        remaining = max(0.0, self.started_at + settings.forced_end - clock.seconds())
        self._forced_call: IDelayedCall | None = clock.callLater(remaining, self.end, "forced end")

    def __repr__(self) -> str:
        return f"<Game {self.game_id} {self.state.value}>"

    # -- uploaders ------------------------------------------------------------

    def new_stream(self, name: str) -> UploadStream:
        """A stream for a new uploader, spooled to disk when the game has a spool."""
        if self.spool is None:
            return UploadStream(name)
        store = RawStore(
            self.spool.new_upload(name),
            self.spool.spool.write,
            on_error=lambda error: self._spool_failed(name, error),
            interval=self._settings.spool_sync,
        )
        return UploadStream(name, store)

    def _spool_failed(self, name: str, error: OSError) -> None:
        metrics.spool_errors.inc()
        log.error(
            "game {game_id}: cannot spool upload {name!r} ({why}); keeping it in memory",
            game_id=self.game_id,
            name=name,
            why=str(error),
        )

    def add_recovered(self, stream: UploadStream) -> None:
        """An upload a previous run spooled; it has ended, but counts like any other."""
        self._recovered = True
        self._left += 1
        if self.recorder is None:
            self.recorder = login_from_name(stream.name)
        self._streams.append(stream)
        self._merge.add(stream)
        if self.header is None and stream.header is not None:
            self.header = stream.header
        self._longest = max(self._longest, len(stream.body))

    def uploader_refusal(self) -> Refusal | None:
        """Why a new uploader cannot join, or None."""
        if self.state is not State.ACCEPTING:
            return Refusal("game ended", "its replay has already ended")
        if self._upload_count >= self._settings.max_uploads_per_game:
            return Refusal("too many uploads", f"it has had {self._upload_count} uploads already")
        return None

    def watcher_refusal(self) -> Refusal | None:
        """Why a new watcher cannot join, or None."""
        if self.state not in (State.ACCEPTING, State.SAVING):
            return Refusal("unknown game", "its replay is over")
        if len(self._watchers) >= self._settings.max_watchers_per_game:
            return Refusal("too many watchers", f"it has {len(self._watchers)} watchers already")
        return None

    def add_uploader(self, uploader: Uploader) -> bool:
        """Join an uploader; False when :meth:`uploader_refusal` says no."""
        if self.uploader_refusal() is not None:
            return False
        self._upload_count += 1
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
        self._waiting.silent.discard(uploader)
        self._left += 1
        if self.state is State.ACCEPTING and not self._holding and self._grace_call is None:
            self._grace_call = self._start_grace()

    @property
    def _holding(self) -> bool:
        """Some upload holds the write phase open: connected, and not silenced."""
        return len(self._uploads) > len(self._waiting.silent)

    def _start_grace(self) -> IDelayedCall:
        grace = self._settings.grace
        return self._clock.callLater(grace, self.end, f"no uploader for {grace:g} s")

    def resume_at_tick(self, uploader: Uploader) -> None:
        """The uploader paused its reading; wake it at the next tick."""
        self._paused.append(uploader)

    @property
    def uploader_count(self) -> int:
        return len(self._uploads)

    # -- watchers -------------------------------------------------------------

    def add_watcher(self, watcher: Watcher) -> bool:
        """Join a watcher; False when :meth:`watcher_refusal` says no."""
        if self.watcher_refusal() is not None:
            return False
        self._watchers.add(watcher)
        self._peak_watchers = max(self._peak_watchers, len(self._watchers))
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

    def status(self, now: float) -> dict[str, object]:
        """What the live-games API says of this game."""
        if self.visible or self.finished or not self._uploads:
            watchable_in = 0.0 if self.header is not None else float(self._settings.delay)
        elif self._first_body_at is None:
            watchable_in = float(self._settings.delay)  # no body yet: at least the whole delay
        else:
            watchable_in = max(0.0, self._first_body_at + self._settings.delay - now)
        return {
            "game_id": self.game_id,
            "uploaders": len(self._uploads),
            "watchers": len(self._watchers),
            "merged_bytes": self._merge.length,
            "visible_bytes": self.visible,
            "seconds_since_start": round(max(0.0, now - self.started_at), 1),
            "watchable_in": round(watchable_in, 1),
            "ending": self.state is not State.ACCEPTING or not self._uploads,
            "state": self.state.value,
        }

    # -- time -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Sample the uploads, merge what the delay allows, publish it."""
        self.sample(now)
        self.publish(now)

    def sample(self, now: float) -> None:
        """The first half of a tick: read the uploads, note how long the longest is."""
        if self.state is not State.ACCEPTING:
            return
        paused, self._paused = self._paused, []
        for uploader in paused:
            uploader.resume()
        for stream in self._streams:
            stream.flush(now)
            self._longest = max(self._longest, len(stream.body))
        if self._longest and self._first_body_at is None:
            self._first_body_at = now
        self._window.record(now, self._longest)

    def publish(self, now: float) -> None:
        """The second half: merge what the delay allows, show it, apply the waiting rules."""
        if self.state is not State.ACCEPTING:
            return
        limit = self._window.limit(now) if self._uploads else None
        self._advance(limit)
        if self._waiting.stalls(now, self._merge, self._streams):
            self._advance(limit)
        self._waiting.silences(now, self._uploads, others_left=self._left > 0)
        if self._holding and self._grace_call is not None:
            self._grace_call.cancel()  # a silent last upload sends again
            self._grace_call = None
        elif not self._holding and self._grace_call is None:
            self._grace_call = self._start_grace()  # as if it had left

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
        """End the write phase and save; fires with the :class:`SaveOutcome` of
        the (next) attempt.

        Safe to call in any state: a game waiting to retry its save tries now.
        """
        waiter: Deferred = Deferred()
        if self.state is not State.ACCEPTING:
            if self.state is State.SAVING:
                self._save_waiters.append(waiter)
                if self._retry_call is not None and self._retry_call.active():
                    self._retry_call.cancel()
                    self._attempt_save()
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
        self._paused.clear()
        for uploader in list(self._uploads):
            uploader.drain()  # what was sent before the end belongs in the replay
        for uploader in list(self._uploads):
            uploader.stream.ended = True
            uploader.close()
        self._uploads.clear()
        for stream in self._streams:
            stream.flush()

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
        self._replay = FinishedReplay(
            game_id=self.game_id,
            header=self.header,
            body=self._merge.canonical,
            recorder=self.recorder or "",
            started_at=self.started_at,
            ended_at=ended_at,
            body_length=self._merge.length,
            recovered=self._recovered,
        )
        self._attempt_save()
        return waiter

    def _attempt_save(self) -> None:
        self._retry_call = None
        assert self._replay is not None
        self._save(self._replay).addBoth(self._saved)

    def _saved(self, outcome: object) -> None:
        if isinstance(outcome, Failure):
            log.failure("game {game_id}: saving failed", outcome, level=LogLevel.error, game_id=self.game_id)
            outcome = SaveOutcome.BROKEN
        waiters, self._save_waiters = self._save_waiters, []
        for waiter in waiters:
            waiter.callback(outcome)
        if outcome is SaveOutcome.BROKEN and self._broken_once():
            return
        if outcome in (SaveOutcome.FAILED, SaveOutcome.BROKEN):
            if self._retry_delay is not None:
                log.info(
                    "game {game_id}: the replay stays in the spool; next try in {delay:g} s",
                    game_id=self.game_id,
                    delay=self._retry_delay,
                )
                self._retry_call = self._clock.callLater(self._retry_delay, self._attempt_save)
                self._retry_delay = min(self._retry_delay * 2, SAVE_RETRY_MAX)
            return
        self.state = State.DRAINING
        metrics.finished_replays.inc()
        self._drain_or_finish()

    def _drain_or_finish(self) -> None:
        if not self._watchers:
            self._finish()
        else:
            self._drain_call = self._clock.callLater(self._settings.drain_timeout, self.close_watchers)

    def _broken_once(self) -> bool:
        """A save failed by the data itself: counted (across restarts, in the
        spool); after ``SAVE_ATTEMPTS_BROKEN`` such failures the game goes to
        quarantine instead of being tried again. True when it went."""
        self._broken += 1
        if self.spool is not None:
            self.spool.note_broken("saving failed")
            self._broken = self.spool.broken_saves
        if self._broken < SAVE_ATTEMPTS_BROKEN:
            return False
        metrics.quarantined_replays.inc()
        kept = "given up (no spool to keep it)"
        if self.spool is not None:
            where = self.spool.quarantine(f"saving failed {self._broken} times", self._clock.seconds())
            kept = f"its uploads are kept in quarantine at {where} (docs/operations.md: Quarantine)"
        log.error(
            "game {game_id}: saving failed {count} times the same way; {kept}",
            game_id=self.game_id,
            count=self._broken,
            kept=kept,
        )
        self._retry_delay = None
        self.state = State.DRAINING
        self._drain_or_finish()
        return True

    def stop_retrying(self) -> None:
        """Shutdown: leave an unsaved replay in the spool for the next run."""
        self._retry_delay = None
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self.state is State.SAVING and self.spool is not None:
            self.spool.close()

    def close_watchers(self) -> None:
        for watcher in list(self._watchers):
            watcher.close()

    def _finish(self) -> None:
        if self.state is State.DONE:
            return
        self.state = State.DONE
        metrics.watchers_per_replay.observe(self._peak_watchers)
        if self.spool is not None:
            # The replay is safe and no watcher reads the uploads any more.
            self.spool.remove()
        if self._drain_call is not None and self._drain_call.active():
            self._drain_call.cancel()
        self._drain_call = None
        self._slices.clear()
        self._on_done(self)

"""One game's replay, from its first uploader to its saved file.

A :class:`Game` owns the game's uploads (one :class:`~faf_replay.replay.uploads.UploadRecord`
each), its merge, its delay window and its watchers, and it moves through the
lifecycle of ``lifecycle.py`` (ACCEPTING, SAVING, DRAINING, DONE; the diagram:
``docs/lifecycle.dot``), always by :meth:`Game._move`. Its save, with retries
and quarantine, is ``save/attempts.py``'s. Time comes from the clock passed in
(the reactor, or a ``Clock`` in tests); the registry calls :meth:`Game.tick`
once per sample interval, the only place merging and publishing happen; whom
the game waits for then is ``waiting.py``'s to say. With a spool, every upload
is on disk as it arrives and the game's spool folder is removed only once its
replay is safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from faf_replay import metrics
from faf_replay.replay.delay import DelayWindow
from faf_replay.replay.finished import FinishedReplay, SaveFunction
from faf_replay.replay.game_status import game_status
from faf_replay.replay.lifecycle import Lifecycle, State
from faf_replay.replay.merge import QuorumMerge
from faf_replay.replay.slices import SliceCache
from faf_replay.replay.stream import UploadStream
from faf_replay.replay.uploads import Uploader, UploadRecord, Uploads
from faf_replay.replay.waiting import Waiting
from faf_replay.replay.watchers import Watcher, Watchers
from faf_replay.save.attempts import SaveAttempts
from faf_replay.save.metadata import login_from_name
from faf_replay.settings import Settings
from faf_replay.spool.spool import GameSpool
from faf_replay.spool.streams import spooled_stream

__all__ = ["Game", "Refusal", "State", "Uploader", "Watcher"]

log = Logger()


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
        self._lifecycle = Lifecycle()
        self._settings = settings
        self._clock = clock
        self._save = save
        self._on_done = on_done
        self.spool = spool
        self.started_at = clock.seconds() if started_at is None else started_at

        self.header: bytes | None = None
        #: Body bytes watchers may have; grows at ticks, all of it once the write phase is over
        #: and the replay saved (``_saved``). Never more than the spool holds (``_on_disk``).
        self.visible = 0
        #: The write phase is over and the replay saved: no more bytes will become visible.
        self.write_phase_over = False
        #: Login of the first uploader, as FAF names the replay's recorder.
        self.recorder: str | None = None
        #: When the first body byte was sampled.
        self.first_body_at: float | None = None
        #: Its write phase ended while uploads were connected (forced end, shutdown): its
        #: players may be playing still. See also :attr:`recovered`.
        self.ended_connected = False

        self._merge: QuorumMerge[UploadRecord] = QuorumMerge(settings.quorum)
        self._waiting = Waiting(game_id, settings)
        self._window = DelayWindow(settings.delay)
        self._longest = 0
        self._uploads = Uploads()
        self._watchers = Watchers()
        self._slices = SliceCache(lambda start, end: bytes(self._merge.canonical[start:end]))
        self._saving: SaveAttempts | None = None
        self._retrying = True
        # A game nobody uploads to ends like one everybody left.
        self._grace_call: IDelayedCall | None = self._start_grace()
        self._drain_call: IDelayedCall | None = None
        remaining = max(0.0, self.started_at + settings.forced_end - clock.seconds())
        self._forced_call: IDelayedCall | None = clock.callLater(remaining, self.end, "forced end")

    def __repr__(self) -> str:
        return f"<Game {self.game_id} {self.state.value}>"

    @property
    def state(self) -> State:
        return self._lifecycle.state

    def _move(self, to: State) -> None:
        """Every change of state, and what entering the state does."""
        self._lifecycle.move(to)
        if to is State.DRAINING:
            if not self._watchers:
                self._move(State.DONE)
            else:
                self._drain_call = self._clock.callLater(self._settings.drain_timeout, self.close_watchers)
        elif to is State.DONE:
            metrics.watchers_per_replay.observe(self._watchers.peak)
            if self.spool is not None:
                self.spool.remove()  # the replay is safe and no watcher reads the uploads any more
            _cancel(self._drain_call)
            self._drain_call = None
            self._slices.clear()
            self._on_done(self)

    # -- uploaders ------------------------------------------------------------

    def new_stream(self, name: str) -> UploadStream:
        """A stream for a new uploader, spooled to disk when the game has a spool."""
        return spooled_stream(self.game_id, name, self.spool, self._settings.spool_sync)

    def add_recovered(self, stream: UploadStream) -> None:
        """An upload a previous run spooled; it has ended, but counts like any other."""
        self._join(self._uploads.add_recovered(stream))

    def _join(self, record: UploadRecord) -> None:
        stream = record.stream
        if self.recorder is None:
            self.recorder = login_from_name(stream.name)
        self._merge.add(record)
        if self.header is None and stream.header is not None:
            self.header = stream.header
        self._longest = max(self._longest, len(stream.body))

    def uploader_refusal(self) -> Refusal | None:
        """Why a new uploader cannot join, or None."""
        if self.state is not State.ACCEPTING:
            return Refusal("game ended", "its replay has already ended")
        if self._uploads.joined >= self._settings.max_uploads_per_game:
            return Refusal("too many uploads", f"it has had {self._uploads.joined} uploads already")
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
        self._join(self._uploads.add(uploader))
        _cancel(self._grace_call)
        self._grace_call = None
        return True

    def header_complete(self, stream: UploadStream) -> None:
        """An upload finished its replay header; the first one becomes the game's."""
        if self.header is None and stream.header is not None:
            self.header = stream.header
            self._watchers.notify()

    def uploader_ended(self, uploader: Uploader) -> None:
        """The uploader sends nothing more that counts (it is closing)."""
        record = self.record(uploader)
        if record is not None:
            record.end()

    def uploader_left(self, uploader: Uploader) -> None:
        if not self._uploads.remove(uploader):
            return
        if self.state is State.ACCEPTING and not self._holding and self._grace_call is None:
            self._grace_call = self._start_grace()

    def record(self, uploader: Uploader) -> UploadRecord | None:
        """What the game knows of a connected upload: does it still count?"""
        return self._uploads.record_of(uploader)

    @property
    def _holding(self) -> bool:
        return self._uploads.holding

    def _start_grace(self) -> IDelayedCall:
        grace = self._settings.grace
        return self._clock.callLater(grace, self.end, f"no uploader for {grace:g} s")

    @property
    def uploader_count(self) -> int:
        return self._uploads.connected_count

    def received_history(self) -> tuple[tuple[float, int], ...]:
        """When the longest upload reached which length, over the last ``delay`` seconds."""
        return self._window.samples()

    @property
    def merged_length(self) -> int:
        return self._merge.length

    # -- watchers -------------------------------------------------------------

    def add_watcher(self, watcher: Watcher) -> bool:
        """Join a watcher; False when :meth:`watcher_refusal` says no."""
        if self.watcher_refusal() is not None:
            return False
        self._watchers.add(watcher)
        return True

    def remove_watcher(self, watcher: Watcher) -> None:
        self._watchers.remove(watcher)
        if self.state is State.DRAINING and not self._watchers:
            self._move(State.DONE)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def read(self, start: int, end: int) -> bytes:
        """Visible body bytes ``[start, end)``, at most up to the next chunk
        boundary; watchers at the same place share one copy (``slices.py``)."""
        return self._slices.slice(start, min(end, self.visible))

    def status(self, now: float, from_vault: bool = False) -> dict[str, object]:
        """What the live-games API says of this game (``game_status.py``)."""
        return game_status(self, now, self._settings.delay, from_vault)

    def close_watchers(self) -> None:
        self._watchers.close_all()

    # -- time -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Sample the uploads, merge what the delay allows, publish it."""
        self.sample(now)
        self.publish(now)

    def sample(self, now: float) -> None:
        """The first half of a tick: read the uploads, note how long the longest is.

        The length is noted at the clock's time after the reads, not at ``now`` (read before
        them, and before the games sampled ahead of this one): a read here takes in what the
        players wrote up to the read itself, and a stall before it (a long garbage
        collection, a throttled or stopped process) would otherwise date those bytes before
        they were sent, and watchers would get them that much early."""
        if self.state is not State.ACCEPTING:
            return
        longest = self._longest
        for record in self._uploads.records:
            if record.paused:  # its reading waited for this tick
                record.paused = False
                if record.uploader is not None:
                    record.uploader.resume()
            stream = record.stream
            stream.flush(now)
            longest = max(longest, len(stream.body))
        self._uploads.note_returns()
        self._longest = longest
        read_at = self._clock.seconds()
        if self._longest and self.first_body_at is None:
            self.first_body_at = read_at
        self._window.record(read_at, self._longest)

    def publish(self, now: float) -> None:
        """The second half: merge what the delay allows, show it, apply the waiting rules."""
        if self.state is not State.ACCEPTING:
            return
        connected = self._uploads.connected
        # Once every upload has left, the rest is shown: its players are done. Not while an
        # upload brought back from the spool has not come back: its player was cut, and may
        # play on.
        limit = self._window.limit(now) if connected or self._uploads.not_back else None
        self._advance(limit)
        if self._waiting.stalls(now, self._merge, self._uploads.records):
            self._advance(limit)
        self._waiting.silences(now, connected, others_left=self._uploads.left > 0)
        holding = self._holding
        if holding and self._grace_call is not None:
            self._grace_call.cancel()  # a silent last upload sends again
            self._grace_call = None
        elif not holding and self._grace_call is None:
            self._grace_call = self._start_grace()  # as if it had left

    def _advance(self, limit: int | None, visible_cap: int | None = None) -> None:
        """Merge up to ``limit`` and show watchers what was merged, or at most ``visible_cap``."""
        merge = self._merge
        merge.advance(limit)
        for record, position in merge.take_dropped():
            record.stream.drop()
            metrics.diverged_uploads.inc()
            log.warn(
                "game {game_id}: upload {name!r} diverged at body byte {position}; its data is discarded",
                game_id=self.game_id,
                name=record.name,
                position=position,
            )
        self._uploads.keep(lambda record: record in merge)
        visible = merge.length if visible_cap is None else min(merge.length, visible_cap)
        on_disk = self._on_disk()
        if on_disk is not None:
            visible = min(visible, on_disk)
        if visible > self.visible:
            self.visible = visible
            self._watchers.notify()

    def _on_disk(self) -> int | None:
        """Merged body bytes some upload still in the merge has in its spool file (each such
        upload's body starts with the merged one), which watchers may see: a kill -9 takes
        back what is only in memory, and the replay saved after it would lack bytes a watcher
        had. None when no upload has a spool file (a server without a spool)."""
        merge = self._merge
        disks = [
            on_disk
            for record in self._uploads.records
            if record in merge and (on_disk := record.stream.body_on_disk) is not None
        ]
        return min(merge.length, max(disks)) if disks else None

    # -- the end --------------------------------------------------------------

    @property
    def waits_for_room(self) -> bool:
        """Its save waits for a retry after the vault refused its file."""
        return self.state is State.SAVING and self._saving is not None and self._saving.waits_for_room

    def save_now(self) -> None:
        """A save waiting for its retry tries now (the vault has room again)."""
        if self._saving is not None:
            self._saving.now()

    def end(self, reason: str) -> Deferred:
        """End the write phase and save; fires with the :class:`SaveOutcome` of
        the (next) attempt.

        Safe to call in any state: a game waiting to retry its save tries now.
        """
        if self.state is not State.ACCEPTING:
            if self.state is State.SAVING and self._saving is not None:
                return self._saving.now()
            return succeed(None)
        self._move(State.SAVING)
        for call in (self._grace_call, self._forced_call):
            _cancel(call)
        self._grace_call = self._forced_call = None
        # Uploaders still connected mean the game may still be running (forced end,
        # shutdown), as may a recovered one: watchers then keep their delay, only the file
        # gets all.
        self._uploads.note_returns()
        self.ended_connected = bool(self._uploads.connected)
        cap = self._window.limit(self._clock.seconds()) if self.cut else None
        self._uploads.close_all()

        self._advance(None, cap)
        ended_at = self._clock.seconds()
        log.info(
            "game {game_id}: write phase over ({reason}) after {duration:.0f} s, {length} body bytes merged",
            game_id=self.game_id,
            reason=reason,
            duration=ended_at - self.started_at,
            length=self._merge.length,
        )
        merge, recorder = self._merge, self.recorder or ""
        replay = FinishedReplay(
            self.game_id, self.header, merge.canonical, recorder, self.started_at, ended_at
        )
        replay = replace(replay, body_length=merge.length, recovered=self._uploads.recovered)
        saved = partial(self._saved, cap)
        self._saving = SaveAttempts(
            replay, self._save, self._clock, self.spool, saved, retrying=self._retrying
        )
        return self._saving.start()

    def _saved(self, cap: int | None) -> None:
        """The save is over (the file is in the vault, or there was nothing to save, or its
        uploads went to quarantine): the last bytes, those only in memory when the write phase
        ended, are durable now. Watchers get everything (``cap``: what the delay allows, when
        uploads were still connected), then the end; the game drains."""
        merge = self._merge
        visible = merge.length if cap is None else min(merge.length, cap)
        self.visible = max(self.visible, visible)
        self.write_phase_over = True
        self._watchers.notify()
        self._move(State.DRAINING)

    @property
    def recovered(self) -> bool:
        """Brought back from the spool after a kill: its players were cut while connected."""
        return self._uploads.recovered

    @property
    def cut(self) -> bool:
        """Its players may be playing still: an upload recovered from the spool has not come
        back, or its write phase ended while uploads were connected. Watchers keep the delay
        to the end, and its replay waits out the delay in the vault."""
        return self._uploads.not_back or self.ended_connected

    @property
    def no_live_watchers(self) -> bool:
        """Brought back from the spool, its cut players not all back, and none of its uploaders
        connected: a live view would show the spooled bytes once it ends; the vault serves it
        after the delay instead."""
        return self.recovered and self.cut and not self.uploader_count

    def stop_retrying(self) -> None:
        """Shutdown: leave an unsaved replay in the spool for the next run."""
        self._retrying = False
        if self._saving is not None:
            self._saving.stop()


def _cancel(call: IDelayedCall | None) -> None:
    if call is not None and call.active():
        call.cancel()

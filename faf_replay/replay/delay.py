"""How much of a game's body watchers may see: the per-game delay
(docs/protocol.md, "Watching and the delay").

Let L(t) be the most body bytes any uploader of the game had sent by time t.
While any uploader is connected, watchers see at most L(now - delay) bytes. The
game samples L once per sample interval, each sample dated no earlier than the
reads it counts; the limit is the newest sample taken at least ``delay`` seconds
ago, so it never runs ahead of the true L(now - delay).
Pure logic: times are plain floats from whatever clock the caller uses.
"""

from __future__ import annotations

from collections import deque


class DelayWindow:
    __slots__ = ("_samples", "delay")

    def __init__(self, delay: float) -> None:
        if delay < 0:
            raise ValueError("delay must not be negative")
        self.delay = delay
        self._samples: deque[tuple[float, int]] = deque()

    def record(self, now: float, length: int) -> None:
        """Note that ``length`` body bytes existed at time ``now``."""
        if self._samples and self._samples[-1][1] == length:
            return  # an unchanged length adds nothing: the older sample is as good
        self._samples.append((now, length))

    def samples(self) -> tuple[tuple[float, int], ...]:
        """The samples kept: (time, length), oldest first, the last ``delay`` seconds and one before."""
        return tuple(self._samples)

    def limit(self, now: float) -> int:
        """Body bytes that are at least ``delay`` old at time ``now``."""
        horizon = now - self.delay
        samples = self._samples
        while len(samples) > 1 and samples[1][0] <= horizon:
            samples.popleft()
        if samples and samples[0][0] <= horizon:
            return samples[0][1]
        return 0

"""Where faf-replay's CPU goes, from the raw py-spy profile of a load run.

    .venv/bin/python -m benchmarks.load cost --profile /tmp/cost.raw
    .venv/bin/python -m benchmarks.profile_areas /tmp/cost.raw [--top 25]

py-spy's raw format is one line per distinct stack: its frames, outermost
first, separated by ``;``, then a space and how many samples (at 100 Hz) found
a thread there. This prints the functions with the most self time (the
innermost frame, line included: a line is often one system call) and the
share of the samples by area, so that a change to the server can be judged by
what it moves, not only by the total.

An area is the first of ``AREAS`` whose pattern is in any frame of a stack, so
the order matters: the saving thread's work is saving whatever it calls, a
pause or resume of an upload's socket is epoll registration wherever it is
called from, and so on down to the reactor loop itself. Samples in
``epoll_wait`` or in an idle worker's wait are counted apart: py-spy counts
a thread caught there whether it was busy in the kernel or waiting.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

#: Innermost frames that are (mostly) waiting, not work.
WAITING = ("EPollReactor.doPoll (twisted/internet/epollreactor.py:227)", "Condition.wait (", "Queue.get (")

#: (area, patterns): a stack belongs to the first area with a pattern in one of its frames.
AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("saving: zstd", ("encode_replay (",)),
    ("saving: vault file write and fsync", ("write_replay (", "faf_replay/save/durable.py")),
    ("saving: reading the spool back", ("FinishedReplay.body_bytes (",)),
    (
        "saving: the rest (metadata, bookkeeping)",
        ("faf_replay/save/saver.py", "faf_replay/replay/finished.py"),
    ),
    ("spool deletion", ("Emptier._run (", "rmtree (")),
    ("spool writes and syncs", ("_write_all (", "Spool._sync (", "Spool.send.", "SpoolFile.write (")),
    ("logging", ("twisted/logger/",)),
    (
        "epoll registration: pause/resume of uploads",
        ("pauseProducing (", "resumeProducing (", "stopReading (", "startReading ("),
    ),
    ("epoll registration: watchers' writes", ("startWriting (", "stopWriting (")),
    ("socket writes (watchers)", ("writeSomeData (", "FileDescriptor.doWrite (")),
    ("ticks: merge and delay", ("Game.tick (", "GameRegistry._tick_group", "faf_replay/replay/merge.py")),
    ("watchers: reading the stream", ("DownloadProtocol.", "Game.read (")),
    ("uploads: header and in-memory tail", ("UploadProtocol.dataReceived (", "ReplayProtocol.dataRece")),
    ("socket reads (recv, Twisted's doRead)", ("Connection.doRead (", "_doReadOrWrite (")),
    ("connections: accept and close", ("doAccept (", "connectionLost (", "_closeSocket (")),
    ("reactor loop and timers", ("ReactorBase.run (",)),
]


def parse(lines) -> list[tuple[list[str], int]]:
    """(frames outermost first, samples) for each line of a raw py-spy profile."""
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def area(frames: list[str]) -> str:
    """The area of one stack (see ``AREAS``), "waiting" for a wait, "other" for the rest."""
    if frames and frames[-1].startswith(WAITING):
        return "waiting (epoll_wait, idle threads)"
    for name, patterns in AREAS:
        if any(pattern in frame for frame in frames for pattern in patterns):
            return name
    return "other"


def by_area(stacks: list[tuple[list[str], int]]) -> Counter:
    samples: Counter = Counter()
    for frames, count in stacks:
        samples[area(frames)] += count
    return samples


def self_time(stacks: list[tuple[list[str], int]]) -> Counter:
    """Samples by innermost frame (function and line)."""
    samples: Counter = Counter()
    for frames, count in stacks:
        samples[frames[-1] if frames else "?"] += count
    return samples


def report(stacks: list[tuple[list[str], int]], top: int = 25) -> str:
    """Both tables; shares are of the samples that are not waiting."""
    areas = by_area(stacks)
    waiting = areas.pop("waiting (epoll_wait, idle threads)", 0)
    working = sum(areas.values())
    lines = [f"{working} samples of work (100 Hz: about {working / 100:.1f} s), {waiting} waiting", ""]
    lines += [f"{100 * count / working:5.1f} %  {name}" for name, count in areas.most_common()]
    lines += ["", f"top {top} self time (share of work samples):"]
    for frame, count in self_time(stacks).most_common(top):
        marker = " (waiting)" if frame.startswith(WAITING) else ""
        lines.append(f"{100 * count / working:5.1f} %  {frame}{marker}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="summarize a raw py-spy profile of faf-replay")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with args.profile.open() as lines:
        print(report(parse(lines), args.top))


if __name__ == "__main__":
    main()

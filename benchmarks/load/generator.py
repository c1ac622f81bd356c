"""The load generator: one process drives many non-blocking sockets (uploads written ten times a
second, watchers reading), started by :func:`run_generators`, several at once."""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from benchmarks.load.paths import ROOT
from benchmarks.load.plans import GeneratorSpec
from benchmarks.load.server import Sampler
from benchmarks.load.streams import make_stream, stream_key, tick_times


@dataclass
class Upload:
    game: int
    sock: socket.socket
    data: bytes
    end: int  # where this uploader stops (early leavers stop before the end)
    sent: int = 0
    wire: bytes = b""
    closed_at: float | None = None


@dataclass
class Watch:
    game: int
    sock: socket.socket
    join_at: float
    digest: object = field(default_factory=hashlib.sha256)
    received: int = 0
    done: bool = False
    connected: bool = False
    #: When its ``G/…\0`` went out, and when the first byte came back (the
    #: replay header, which is not delayed).
    asked_at: float | None = None
    first_at: float | None = None
    #: Byte offsets of the stream whose arrival is timed, and when each came.
    marks: tuple[int, ...] = ()
    marked_at: list[float] = field(default_factory=list)

    def arrived(self, now: float) -> None:
        """Bytes came (``received`` counts them): note the first, and the marks passed."""
        if self.first_at is None:
            self.first_at = now
        while len(self.marked_at) < len(self.marks) and self.received > self.marks[len(self.marked_at)]:
            self.marked_at.append(now)


#: Where in a stream a watcher's arrival times are taken (fractions of it).
WATCH_MARKS = (0.25, 0.5, 0.75)


def generator(spec: GeneratorSpec) -> dict:
    """Run one generator's share of the games; returns what it saw."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    address = (spec.host, spec.port)
    streams: dict[tuple, bytes] = {}
    selector = selectors.DefaultSelector()
    uploads: list[Upload] = []
    watches: list[Watch] = []
    start = spec.start_at
    interval = spec.interval
    for game in spec.games:
        key = stream_key(game)
        if key not in streams:
            streams[key] = make_stream(*key)
        stream = streams[key]
        for plan in game.uploaders:
            data = stream
            if plan.diverge_at is not None:
                at = int(len(stream) * plan.diverge_at)
                data = stream[:at] + bytes(b ^ 0x55 for b in stream[at : at + 64]) + stream[at + 64 :]
            end = int(len(data) * plan.leave_at)
            sock = _connect(address)
            sock.send(f"P/{game.id}/{plan.name}.SCFAreplay\0".encode())
            uploads.append(Upload(game.id, sock, data, end))
        marks = tuple(int(len(stream) * fraction) for fraction in WATCH_MARKS)
        for delay in game.watchers:
            watches.append(Watch(game.id, _socket(), start + delay, marks=marks))
    pacing = None
    if spec.acceleration is not None:
        ticks = tick_times(next(iter(streams.values())), spec.acceleration)
        pacing = ([at for at, _ in ticks], [offset for _, offset in ticks])
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    while time.time() < start:
        time.sleep(0.01)
    pending_watches = sorted(watches, key=lambda w: w.join_at)
    open_uploads = list(uploads)
    next_tick = start
    deadline = start + spec.timeout
    while (open_uploads or not all(w.done for w in watches)) and time.time() < deadline:
        now = time.time()
        while pending_watches and pending_watches[0].join_at <= now:
            watch = pending_watches.pop(0)
            try:
                watch.sock.connect(address)
                watch.sock.setblocking(False)
                watch.sock.send(f"G/{watch.game}/bench\0".encode())
                watch.asked_at = time.time()
                watch.connected = True
                selector.register(watch.sock, selectors.EVENT_READ, watch)
            except OSError:
                watch.done = True
        if now >= next_tick:
            elapsed = now - start
            for upload in list(open_uploads):
                target = upload_target(upload, elapsed, spec.rate, pacing)
                if target > upload.sent or upload.wire:
                    upload.wire += upload.data[upload.sent : target]
                    upload.sent = max(upload.sent, target)
                    try:
                        upload.wire = upload.wire[upload.sock.send(upload.wire) :] if upload.wire else b""
                    except BlockingIOError:
                        pass
                    except OSError:
                        upload.wire, upload.sent = b"", upload.end
                if upload.sent >= upload.end and not upload.wire:
                    upload.sock.close()
                    upload.closed_at = time.time()
                    open_uploads.remove(upload)
            next_tick += interval
        timeout = max(
            0.0, min(next_tick, pending_watches[0].join_at if pending_watches else next_tick) - time.time()
        )
        for key, _ in selector.select(timeout):
            watch = key.data
            while True:
                try:
                    chunk = watch.sock.recv(262144)
                except BlockingIOError:
                    break
                except OSError:
                    chunk = b""
                if not chunk:
                    watch.done = True
                    selector.unregister(watch.sock)
                    watch.sock.close()
                    break
                watch.digest.update(chunk)
                watch.received += len(chunk)
                watch.arrived(time.time())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu": usage.ru_utime - usage_before.ru_utime + usage.ru_stime - usage_before.ru_stime,
        "uploads": [
            {"game": u.game, "sent": u.sent, "end": u.end, "closed_at": u.closed_at} for u in uploads
        ],
        "watches": [
            {
                "game": w.game,
                "received": w.received,
                "sha256": w.digest.hexdigest(),
                "done": w.done,
                "join_at": w.join_at,
                "asked_at": w.asked_at,
                "first_at": w.first_at,
                "marks": list(w.marks),
                "marked_at": w.marked_at,
            }
            for w in watches
        ],
    }


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    return sock


def _connect(address) -> socket.socket:
    sock = _socket()
    sock.connect(address)
    sock.setblocking(False)
    return sock


def upload_target(upload: Upload, elapsed: float, rate: float | None, pacing) -> int:
    if pacing is None:
        return min(upload.end, int(elapsed * rate))
    times, offsets = pacing
    reached = bisect.bisect_right(times, elapsed)  # Advance ticks due by now
    return min(upload.end, offsets[reached - 1] if reached else 0)


def run_generators(specs: list[GeneratorSpec], sampler: Sampler) -> list[dict]:
    outputs = [tempfile.TemporaryFile() for _ in specs]  # not pipes: a full pipe would block a generator
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.load", "generator"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=output,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for output in outputs
    ]
    for process, spec in zip(processes, specs, strict=True):
        process.stdin.write(spec.to_json().encode())
        process.stdin.close()
    while any(p.poll() is None for p in processes):
        sampler.sample()
        time.sleep(1)
    results = []
    for output in outputs:
        output.seek(0)
        results.append(json.loads(output.read()))
        output.close()
    return results

"""What the saving threads' compressors keep: the resident memory of a process whose four
worker threads compress replays of growing size with the saver's own ``encode_replay`` (each
thread keeps its zstd compressor, whose tables grow to the largest replay it compressed), next
to the Python allocator's live blocks, which do not move.

    .venv/bin/python -m benchmarks.compressor_memory [--level 10] [--threads 4]

Run it with ``MALLOC_ARENA_MAX=1`` or ``MALLOC_MMAP_THRESHOLD_=131072`` in the environment to
see whether glibc's arenas or its mmap threshold are what holds the memory.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from faf_replay.save.vault import encode_replay
from tests.support.recordings import recording

#: How many copies of the example recording each round compresses (0.04 MB to 5.6 MB).
SIZES = (1, 4, 16, 64, 128, 128)


def resident_mib() -> float:
    status = Path(f"/proc/{os.getpid()}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+)", status)
    return int(found.group(1)) / 1024 if found else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--level", type=int, default=10, help="zstd level (the server's default: 10)")
    parser.add_argument("--threads", type=int, default=4, help="saving threads (the server's: 4)")
    args = parser.parse_args(argv)
    base = recording("example")
    print(f"{os.cpu_count()} CPUs; start: {resident_mib():.1f} MiB resident")
    with ThreadPoolExecutor(args.threads) as pool:
        for copies in SIZES:
            stream = base * copies
            rounds = [stream] * (2 * args.threads)
            list(pool.map(lambda data: len(encode_replay({"uid": 1}, data, args.level)), rounds))
            del stream, rounds
            gc.collect()
            print(
                f"replays of {len(base) * copies / 1e6:.2f} MB: {resident_mib():.1f} MiB resident, "
                f"{sys.getallocatedblocks() / 1000:.0f} thousand live blocks"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the replay parser's panics cost the process: the C allocator's bytes in use before the
first panic on a malformed header, after it, and after four more, with whatever
``RUST_BACKTRACE`` the environment has.

    RUST_BACKTRACE=1 .venv/bin/python -m benchmarks.parser_panic_memory
    RUST_BACKTRACE=0 .venv/bin/python -m benchmarks.parser_panic_memory

The header is a real recording's (``tests/data/22373098``) with ``ff ff ff 7f`` written into a
Lua table of it, the hostile case the chaos soak sent (docs/operations.md, "Errors"). Rust prints
the panics on stderr; this prints its figures on stdout.
"""

from __future__ import annotations

import os

import fafreplay

from faf_replay.server.c_allocator import c_allocator
from tests.support.mutations import SetBytes, mutate

POISON = (SetBytes(offset=3437, value=b"\xff\xff\xff\x7f"),)


def in_use_mib() -> float:
    held = c_allocator()
    if held is None:
        raise SystemExit("no mallinfo2 here (glibc 2.33 or later is needed)")
    return held.in_use / 2**20


def main() -> int:
    stream = mutate("22373098", POISON)
    header = stream[: fafreplay.body_offset(stream)]
    print(f"RUST_BACKTRACE={os.environ.get('RUST_BACKTRACE', '(unset)')}")
    print(f"before any panic: {in_use_mib():.1f} MiB in use")
    for count in range(1, 6):
        try:
            fafreplay.Parser().parse_header(header)
        except BaseException as error:  # pyo3's PanicException is a BaseException
            name = type(error).__name__
        else:
            raise SystemExit("the header parsed: the poison no longer makes the parser panic")
        if count in (1, 5):
            print(f"after {count} {name}(s): {in_use_mib():.1f} MiB in use")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

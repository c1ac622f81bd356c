"""The asyncio anchor (FAForever/faf-aio-replayserver) under the load benchmark.

    .venv/bin/python -m benchmarks.load cost --server anchor --anchor-path /work/anchors/aio

The anchor is not part of this project: check it out outside the repository
and give it a virtualenv of its own, e.g.::

    git -C <mirror of FAForever/faf-aio-replayserver> archive HEAD | tar -x -C /work/anchors/aio
    python3.7 -m venv /work/anchors/aio/.venv
    /work/anchors/aio/.venv/bin/pip install -r /work/anchors/aio/requirements/main-pinned.txt
    /work/anchors/aio/.venv/bin/pip install --no-deps -e /work/anchors/aio

That is how FAF ran it (its Dockerfile: ``python:3.7-slim``, ``main-pinned.txt``).
On the Python of this project (3.11) its pinned aiomysql cannot connect (the
``loop`` arguments asyncio dropped in 3.10): a second checkout with a 3.11
virtualenv and ``aiomysql`` unpinned (and the zstandard of this project)
runs it there, with ``LAUNCH`` below; the figures name the versions.

It is configured through ``RS_*`` environment variables (everett), with the
benchmark's timings: the same delay and grace as faf-replay's run, watchers
served once a second (faf-replay's ``--sample-interval``), a quorum of 2,
linger 1 s. It cannot save without FAF's database (a game without a
``game_stats`` row is not saved), so it always runs against the test suite's
private MariaDB (``benchmarks.load.rows.Rows``) with a ``table_map`` view, the
table its query joins that FAF has since replaced by ``map_version``, and a
login of its own (its pymysql cannot send the suite's non-ASCII password).
It always compresses at zstd level 19. Its files are the same ``.fafreplay``
layout; it creates a file before writing it, so a file counts as saved once
its zstd frame is complete.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from benchmarks.process import Process, free_port

USER, PASSWORD = "faf_aio_anchor", "anchor-password"

#: Starts the anchor's ``main``. Python 3.11 dropped two names the anchor
#: imports from ``asyncio.streams`` (they live in ``asyncio`` since 3.8): they
#: are put back for it here, which changes nothing on the Python it was made
#: for (3.7) and touches none of its code.
LAUNCH = """
import asyncio, asyncio.streams, sys
for name in ("IncompleteReadError", "LimitOverrunError"):
    if not hasattr(asyncio.streams, name):
        setattr(asyncio.streams, name, getattr(asyncio, name))
from replayserver.main import main
sys.exit(main())
"""


def read_fafreplay(data: bytes) -> bytes | None:
    """The stream of a ``.fafreplay`` (JSON line, newline, one zstd frame), None if incomplete.

    A streaming decompressor, because a frame need not record its content
    size; an unfinished frame (a file still being written) gives None.
    """
    import zstandard  # noqa: PLC0415 - the generators do not need it

    line, newline, frame = data.partition(b"\n")
    if not newline:
        return None
    try:
        json.loads(line)
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        stream = decompressor.decompress(frame)
    except (ValueError, zstandard.ZstdError):
        return None
    return stream if decompressor.eof else None


def prepare_database(rows) -> None:
    """What the anchor needs of the benchmark's database beyond FAF's tables (see the module)."""
    from tests.support import mariadb  # noqa: PLC0415

    with rows.connection.cursor() as cursor:
        cursor.execute("CREATE VIEW table_map AS SELECT id, filename FROM map_version")
    mariadb.user(USER, PASSWORD, rows.name)


class Anchor(Process):
    """faf-aio-replayserver as a subprocess of the benchmark, on a free port."""

    kind = "anchor"

    def __init__(self, workdir: Path, path: Path, rows, delay: float, grace: float) -> None:
        self.anchor_path = Path(path)
        python = self.anchor_path / ".venv" / "bin" / "python"
        if not python.exists():
            raise SystemExit(f"no anchor virtualenv at {python} (see benchmarks/anchor.py)")
        vault = workdir / "replays"
        vault.mkdir(exist_ok=True)
        prepare_database(rows)
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RS_", "PYTHON"))}
        env.update(
            {
                "RS_LOG_LEVEL": "INFO",
                "RS_SERVER_PORT": str(port),
                "RS_SERVER_PROMETHEUS_PORT": "None",
                "RS_SERVER_CONNECTION_HEADER_READ_TIMEOUT": "21600",
                "RS_SERVER_CONNECTION_LINGER_TIME": "1",
                "RS_DB_HOST": "127.0.0.1",
                "RS_DB_PORT": str(rows.port),
                "RS_DB_USER": USER,
                "RS_DB_PASSWORD": PASSWORD,
                "RS_DB_NAME": rows.name,
                "RS_STORAGE_VAULT_PATH": str(vault),
                "RS_REPLAY_FORCED_END_TIME": "18000",
                "RS_REPLAY_GRACE_PERIOD": str(grace),
                "RS_REPLAY_DELAY_REPLAY_DELAY": str(delay),
                "RS_REPLAY_DELAY_UPDATE_INTERVAL": "1",
                "RS_REPLAY_MERGE_DESIRED_QUORUM": "2",
                "RS_REPLAY_MERGE_STREAM_COMPARISON_CUTOFF": "1024",
            }
        )
        command = [str(python), "-c", LAUNCH]
        super().__init__(workdir, command, env)
        self.wait_for_log(rb"Started listening on", "listening line")
        self.game_port = port

    def describe(self) -> dict[str, str]:
        """Where the anchor is and the Python and zstandard it runs on, for the figures."""
        python = self.anchor_path / ".venv" / "bin" / "python"
        code = "import sys, zstandard; print(sys.version.split()[0], zstandard.__version__)"
        found = subprocess.run([str(python), "-c", code], check=False, capture_output=True, text=True)
        out = found.stdout.split()
        versions = {"python": out[0], "zstandard": out[1]} if len(out) == 2 else {}
        return {"path": str(self.anchor_path), **versions}

    def is_saved(self, path: Path) -> bool:
        return path.exists() and self.read_saved(path) is not None

    def read_saved(self, path: Path) -> bytes | None:
        try:
            return read_fafreplay(path.read_bytes())
        except OSError:
            return None

"""A server under test, as the load benchmark sees it: one subprocess.

faf-replay (``benchmarks.load.server.Server``), the floor (``benchmarks.floor.FloorProcess``)
and the asyncio anchor (``benchmarks.anchor.Anchor``) are all measured the
same way, from outside: CPU (user + system of every thread) and memory from
``/proc``, the listening port from the server's own log. What only some of
them have (metrics, a JSON log, saved files) is asked of them through the
methods below, which say "nothing" by default.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server that cannot be told to pick one (port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Process:
    """One server subprocess; its output goes to ``workdir/server.log``."""

    kind = "server"
    #: whether it saves replays under ``workdir/replays`` (the floor does not)
    saves = True

    def __init__(
        self, workdir: Path, command: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> None:
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=cwd or workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_for_log(self, pattern: bytes, what: str, seconds: float = 60) -> re.Match:
        """The first match of ``pattern`` in the log; exits with the log's tail if the server dies first."""
        for _ in range(int(seconds * 10)):
            found = re.search(pattern, self.log_path.read_bytes())
            if found:
                return found
            if self.process.poll() is not None:
                sys.exit(f"{self.kind} exited with {self.process.returncode}:\n" + self.log_text()[-3000:])
            time.sleep(0.1)
        sys.exit(f"{self.kind}: no {what} after {seconds} s:\n" + self.log_text()[-3000:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cpu(self) -> float:
        """CPU seconds so far, user + system, all threads."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK

    def memory(self) -> tuple[int, int]:
        """Resident and peak resident bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        return rss * 1024, peak * 1024

    def describe(self) -> dict[str, str]:
        """What the figures should say about this server beyond its kind."""
        return {}

    def metric(self, name: str) -> float | None:
        """A Prometheus metric of faf-replay's; None for a server without them."""
        return None

    def events(self) -> list[dict]:
        """The JSON log lines (faf-replay's); none for the others."""
        return []

    def is_saved(self, path: Path) -> bool:
        """Whether the replay file at ``path`` is complete (faf-replay renames a finished file into place)."""
        return path.exists()

    def read_saved(self, path: Path) -> bytes | None:
        """The replay stream a saved file holds, or None if it cannot be read."""
        import fafreplay  # noqa: PLC0415 - the generators do not need it

        try:
            with path.open("rb") as file:
                return fafreplay.extract_scfa(file)
        except Exception:  # any unreadable file is simply not verified
            return None

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(600)
        finally:
            self._log.close()

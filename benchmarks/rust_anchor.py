"""The Rust replay server FAF runs today, under the load benchmark.

    .venv/bin/python -m benchmarks.load cost --mariadb --server rust --rust-anchor PATH

``PATH`` is the ``faf_rust_replayserver`` binary of ``FAForever/faf-rust-replayserver``,
built by hand outside this repository from its own README (``SQLX_OFFLINE=true
cargo build --release``, as its Dockerfile does); nothing of it is part of this
project. docs/benchmarks.md says which commit was built.

It runs as FAF runs it (``apps/faf-replay-server`` of FAF's gitops-stack): no
command line, a YAML file named by ``RS_CONFIG_FILE``, the database password in
``RS_DB_PASSWORD``, the log level in ``RUST_LOG`` (``info``). The YAML is FAF's
production file with this machine's ports, the run's vault, the benchmark's
MariaDB, ``worker_threads`` equal to the CPUs here, and the timers the load
shortens for every server alike: ``delay_s`` and
``time_with_zero_writers_to_end_replay_s`` (the benchmark's ``--delay`` and
``--grace``); the zstd level is the run's (FAF's 10 unless told otherwise).

Its queries read more of FAF's schema than faf-replay's do (the host's login,
the featured mod's name, the map's file name, the players of each game and the
featured mod's update tables): ``benchmarks.load.rows.Rows`` fills every one of
them. Its files are ``.fafreplay`` like ours; it creates a file before writing
it, so a file counts as saved once its zstd frame is complete.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from benchmarks.anchor import read_fafreplay
from benchmarks.process import Process, free_port

ROOT = Path(__file__).resolve().parent.parent
#: FAF's production configuration of the Rust server, as its gitops-stack has it.
PRODUCTION = ROOT / "tests" / "data" / "faf-production" / "config.yaml"
#: A login of its own, with an ASCII password (the suite's is not).
USER, PASSWORD = "faf_rust_anchor", "rust-anchor-password"


def configuration(vault: Path, rows, port: int, metrics_port: int, timers: dict[str, float]) -> dict:
    """FAF's production YAML with what this run changes (see the module);
    ``timers``: ``delay``, ``grace`` and ``zstd_level`` of the run."""
    config = yaml.safe_load(PRODUCTION.read_text())
    config["server"].update(port=port, prometheus_port=metrics_port, worker_threads=os.cpu_count() or 1)
    config["server"].pop("websocket_port", None)  # the load is TCP: no WebSocket port, as the YAML allows
    config["database"].update(host="127.0.0.1", port=rows.port, user=USER, name=rows.name)
    config["storage"].update(vault_path=str(vault), compression_level=int(timers["zstd_level"]))
    config["replay"].update(delay_s=timers["delay"], time_with_zero_writers_to_end_replay_s=timers["grace"])
    return config


class RustAnchor(Process):
    """faf_rust_replayserver as a subprocess of the benchmark, on a free port."""

    kind = "rust"

    def __init__(
        self, workdir: Path, binary: str, rows, *, delay: float, grace: float, zstd_level: int
    ) -> None:
        from tests.support import mariadb  # noqa: PLC0415

        self.binary = Path(binary).resolve()
        if not os.access(self.binary, os.X_OK):
            raise SystemExit(f"no Rust replay server binary at {self.binary} (see benchmarks/rust_anchor.py)")
        vault = workdir / "replays"
        vault.mkdir(exist_ok=True)
        mariadb.user(USER, PASSWORD, rows.name)
        port = free_port()
        timers = {"delay": delay, "grace": grace, "zstd_level": zstd_level}
        config = configuration(vault, rows, port, free_port(), timers)
        config_file = workdir / "config.yaml"
        config_file.write_text(yaml.safe_dump(config))
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RS_", "RUST_"))}
        env.update(RS_CONFIG_FILE=str(config_file), RS_DB_PASSWORD=PASSWORD, RUST_LOG="info")
        super().__init__(workdir, [str(self.binary)], env)
        self.wait_for_log(rb"TCP socket port: \d+", "listening line")
        self.game_port = port
        self.zstd_level = zstd_level

    def describe(self) -> dict[str, str]:
        """The binary and the version it says it is, for the figures."""
        version = self.wait_for_log(rb"Server version ([\w.-]+)\.", "version line").group(1).decode()
        built = subprocess.run(
            ["sha256sum", str(self.binary)], check=False, capture_output=True, text=True
        ).stdout.split()
        return {"binary": str(self.binary), "version": version, "sha256": built[0][:16] if built else "?"}

    def is_saved(self, path: Path) -> bool:
        return path.exists() and self.read_saved(path) is not None

    def read_saved(self, path: Path) -> bytes | None:
        try:
            return read_fafreplay(path.read_bytes())
        except OSError:
            return None

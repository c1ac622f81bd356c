"""The image of deploy/Dockerfile, built and run as FAF runs its replay server:
configured only by the Rust server's YAML file (RS_CONFIG_FILE), the vault a
root-owned host folder mounted at /data/replays, stopped with SIGTERM."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import fafreplay
import yaml
from twisted.trial.unittest import SynchronousTestCase

from tests.support import containers
from tests.support.paths import REPOSITORY
from tests.system.test_deploy import ENTRYPOINT, compose_service, configmap_environment, production_config

ROOT = REPOSITORY
RECORDING = ROOT / "tests" / "data" / "example.scfareplay"
#: Seconds the server may take to start, or to save a game after its last upload.
DEADLINE = 60


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A GET with exactly these headers (http.client sends no Accept of its own)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def wait_for(what: str, check, deadline: float = DEADLINE, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something true, for at most ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline} s")
        time.sleep(interval)


class ImageContents(SynchronousTestCase):
    """What the image holds and how it starts, without running the server."""

    def setUp(self) -> None:
        containers.require()
        self.image = containers.image()

    def test_starts_twistd_faf_replay_with_no_options(self) -> None:
        config = containers.inspect(self.image)["Config"]
        self.assertEqual(config["Entrypoint"], ENTRYPOINT)
        self.assertFalse(config.get("Cmd"))
        self.assertEqual(config.get("StopSignal"), "SIGTERM")
        self.assertEqual(set(config["ExposedPorts"]), {"15000/tcp", "15001/tcp", "8011/tcp"})
        self.assertEqual(set(config["Volumes"]), {"/data/replays"})
        self.assertIn(config.get("User") or "root", ("", "root", "0"))
        variables = [entry.split("=", 1)[0] for entry in config["Env"]]
        self.assertEqual([name for name in variables if name.startswith("FAF_REPLAY_")], [])

    def test_default_vault_is_the_volume(self) -> None:
        """Without any setting the vault (and so the spool) is on FAF's volume."""
        script = (
            "import os; from faf_replay.settings import Settings; print(os.path.abspath(Settings().vault))"
        )
        result = containers.run(
            "run", "--rm", *containers.limits(), "--entrypoint", "python", self.image, "-c", script
        )
        self.assertEqual(result.stdout.strip(), "/data/replays")

    def test_has_no_compiler_but_every_runtime_library(self) -> None:
        compilers = containers.run(
            "run", "--rm", *containers.limits(), "--entrypoint", "sh", self.image,
            "-c", "command -v gcc cc c++ g++ clang make; true",
        )  # fmt: skip
        self.assertEqual(compilers.stdout.strip(), "")
        # mysqlclient loads libmariadb; the server's modules import.
        script = "import MySQLdb, sentry_sdk, yaml, faf_replay.server.tap; print(MySQLdb.version_info[0])"
        result = containers.run(
            "run", "--rm", *containers.limits(), "--entrypoint", "python", self.image, "-c", script
        )
        self.assertEqual(result.stdout.strip(), "2")


class RunsAsFafRunsIt(SynchronousTestCase):
    """FAF's production settings, with ports free on this machine, the database
    at a closed port (down: the server must run and save anyway) and a grace of
    one second."""

    def setUp(self) -> None:
        containers.require()
        self.image = containers.image()
        self.game_port, self.ws_port, self.http_port, self.closed_port = containers.free_ports(4)
        config = production_config()
        config["server"].update(
            port=self.game_port, websocket_port=self.ws_port, prometheus_port=self.http_port
        )
        config["database"].update(host="127.0.0.1", port=self.closed_port)
        config["replay"]["time_with_zero_writers_to_end_replay_s"] = 1
        self.vault_path = config["storage"]["vault_path"]
        here = Path(self.mktemp()).resolve()
        here.mkdir()
        self.config_file = here / "config.yaml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.vault = here / "vault"
        self.vault.mkdir(mode=0o755)
        self.name = f"faf-replay-test-{os.getpid()}-{self.game_port}"
        self.addCleanup(containers.run, "rm", "--force", "--ignore", self.name, check=False)

    def start(self, *options: str) -> None:
        environment = configmap_environment()
        self.assertIn("RS_CONFIG_FILE", environment)
        variables = [f"--env={name}={value}" for name, value in environment.items()]
        containers.run(
            "run", "--detach", "--name", self.name, "--network=host", *containers.limits(), *options,
            f"--volume={self.config_file}:{environment['RS_CONFIG_FILE']}:ro",
            f"--volume={self.vault}:{self.vault_path}",
            *variables, "--env=RS_DB_PASSWORD=not-used",
            self.image,
        )  # fmt: skip
        wait_for("/health answering 200", self.healthy)

    def healthy(self) -> bool:
        state = containers.inspect(self.name, "container")["State"]
        if not state["Running"]:
            raise AssertionError(f"the container exited {state['ExitCode']}:\n{self.logs()}")
        try:
            return http_get(self.http_port, "/health")[0] == 200
        except OSError:
            return False

    def logs(self) -> str:
        result = containers.run("logs", self.name, check=False)
        return result.stdout + result.stderr

    def upload(self, game_id: int, data: bytes, close: bool = True) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.game_port), timeout=10)
        connection.sendall(b"P/%d/Player.SCFAreplay\0" % game_id + data)
        if close:
            connection.close()
        return connection

    def saved(self, game_id: int) -> Path:
        return self.vault / "0" / "0" / "0" / "0" / f"{game_id}.fafreplay"

    def test_serves_saves_and_stops_cleanly(self) -> None:
        self.start()
        logs = self.logs()
        self.assertIn("RS_CONFIG_FILE=/config/config.yaml", logs)

        status, _, body = http_get(self.http_port, "/health")
        health = json.loads(body)
        self.assertEqual(health["listening"], {"game": True, "websocket": True, "http": True})
        self.assertTrue(health["vault_writable"])
        self.assertIn(health["database"], ("down", "unknown"))

        # FAF scrapes path / (no Accept header); /metrics serves the same.
        for path in ("/", "/metrics"):
            status, headers, body = http_get(self.http_port, path)
            self.assertEqual((path, status), (path, 200))
            self.assertTrue(headers["content-type"].startswith("text/plain"), headers)
            self.assertIn(b"\nreplayserver_running_replays_count ", body)

        # The compose file's health check, run inside the container.
        check = compose_service()["healthcheck"]["test"]
        self.assertEqual(check[0], "CMD")
        command = [part.replace(":8011/", f":{self.http_port}/") for part in check[1:]]
        containers.run("exec", self.name, *command)

        # A whole game: saved into the host folder once its grace (1 s, from the
        # YAML file, not the default 30 s) is over.
        recording = RECORDING.read_bytes()
        self.upload(7, recording)
        wait_for("game 7 saved", self.saved(7).exists)
        self.assertEqual(self.replay_in(self.saved(7)), recording)
        self.assertIn("game 7: write phase over (no uploader for 1 s)", self.logs())

        # A game still uploading at SIGTERM is saved before the process exits 0.
        running = self.upload(8, recording[: len(recording) // 2], close=False)
        self.addCleanup(running.close)

        def game_8_running() -> bool:
            return any(game["game_id"] == 8 for game in json.loads(http_get(self.http_port, "/games")[2]))

        wait_for("game 8 running", game_8_running)
        self.assertFalse(self.saved(8).exists())
        stop = containers.run("stop", "--time", "60", self.name, timeout=90)
        self.assertEqual(stop.returncode, 0)
        state = containers.inspect(self.name, "container")["State"]
        self.assertEqual(state["ExitCode"], 0, self.logs())
        # Every byte sent before SIGTERM, which was half of the game.
        self.assertEqual(self.replay_in(self.saved(8)), recording[: len(recording) // 2])
        self.assertEqual(list((self.vault / ".faf-replay-spool" / "games").iterdir()), [])

    def test_runs_as_another_user_in_a_group_writable_vault(self) -> None:
        """What the manifests' comments say for runAsUser and fsGroup: a vault
        writable through a supplementary group is enough."""
        os.chown(self.vault, 0, 20001)
        self.vault.chmod(0o2775)
        self.config_file.chmod(0o644)
        self.config_file.parent.chmod(0o755)
        self.start("--user=10001:10001", "--group-add=20001")
        self.upload(9, RECORDING.read_bytes())
        wait_for("game 9 saved", self.saved(9).exists)
        self.assertEqual(self.replay_in(self.saved(9)), RECORDING.read_bytes())
        self.assertEqual(self.saved(9).stat().st_uid, 10001)
        containers.run("stop", "--time", "60", self.name, timeout=90)
        self.assertEqual(containers.inspect(self.name, "container")["State"]["ExitCode"], 0, self.logs())

    def replay_in(self, path: Path) -> bytes:
        """The replay stream in a FAF replay file (a JSON line, then one zstd
        frame), read back with FAF's own parser."""
        data = path.read_bytes()
        line, _, body = data.partition(b"\n")
        self.assertIsInstance(json.loads(line), dict)
        self.assertEqual(body[:4], b"\x28\xb5\x2f\xfd")
        self.assertTrue(re.fullmatch(r"\d+\.fafreplay", path.name))
        return fafreplay.extract_scfa(io.BytesIO(data))

"""FAF's production, as its operators run the Rust server: the image swapped, nothing else.

``twistd -n --pidfile= faf-replay`` with no option at all, only the variables
FAF's StatefulSet gives (``RS_CONFIG_FILE``, ``RS_DB_PASSWORD``, ``RUST_LOG``)
and FAF's own ``config.yaml`` (``tests/data/faf-production``), changed only in
its addresses, ports and paths: the database, its user and its name are FAF's,
in the tests' private MariaDB. One game over TCP and WebSocket, saved with the
database's JSON line and ``replay_available = 1``; metrics scraped at ``/``;
FAF's peak from one proxy address; a container killed mid-game and started
again on a fresh filesystem with only the vault kept.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import fafreplay
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from faf_replay.save.vault import vault_path
from tests.support import mariadb
from tests.support.clients import Uploader, Watcher, connect, connect_websocket, until
from tests.support.faf_database import FafDatabase
from tests.support.processes import Twistd, run_twistd
from tests.support.recordings import recording, split
from tests.unit.accept.test_proxied import Held
from tests.unit.server.test_rust_config import PRODUCTION
from tests.unit.server.test_web import PROMETHEUS_ACCEPT, get

PASSWORD = "rust-π-password"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AsFafRunsIt(TestCase):
    timeout = 180

    def setUp(self):
        config = yaml.safe_load(PRODUCTION.read_text())
        # FAF's database, its name and its login, in the private MariaDB.
        self.db = FafDatabase(self, name=config["database"]["name"])
        mariadb.user(config["database"]["user"], PASSWORD, self.db.name)
        # Only addresses, ports and paths change.
        self.root = Path(self.mktemp()).resolve()
        self.vault = self.root / "volume" / "replays"  # the StatefulSet's one volume
        config["server"].update(port=free_port(), websocket_port=free_port(), prometheus_port=free_port())
        config["database"].update(host="127.0.0.1", port=self.db.server.port)
        config["storage"]["vault_path"] = str(self.vault)
        self.config = config
        self.root.mkdir(parents=True)
        self.config_file = self.root / "config.yaml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.containers = 0

    def container(self) -> Twistd:
        """One start of the image: a fresh working directory (the container's own
        filesystem), the same vault volume, FAF's variables and no option."""
        self.containers += 1
        cwd = self.root / f"container-{self.containers}"
        cwd.mkdir()
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("FAF_REPLAY_", "RS_", "RUST_"))
        }
        environment.update(RS_CONFIG_FILE=str(self.config_file), RS_DB_PASSWORD=PASSWORD, RUST_LOG="info")
        return run_twistd(self, str(cwd), env=environment, as_is=True, replace_environment=True)

    @inlineCallbacks
    def started(self, twistd: Twistd):
        port = yield twistd.listening()
        self.assertEqual(port, self.config["server"]["port"])
        yield until(lambda: {"WebSocketReplayFactory", "Site"} <= set(twistd.ports), timeout=30)
        self.assertEqual(twistd.ports["WebSocketReplayFactory"], self.config["server"]["websocket_port"])
        self.assertEqual(twistd.ports["Site"], self.config["server"]["prometheus_port"])

    def saved(self, game_id: int) -> tuple[dict, bytes]:
        path = vault_path(self.vault, game_id)
        with path.open("rb") as file:
            return json.loads(path.read_bytes().split(b"\n", 1)[0]), fafreplay.extract_scfa(file)

    @inlineCallbacks
    def test_a_game_metrics_the_peak_and_shutdown(self):
        self.db.standard_game(5001, title="Ladder: Rowan vs Zoë")
        twistd = self.container()
        yield self.started(twistd)
        self.assertIn(b"configuration from RS_CONFIG_FILE=", twistd.output)
        self.assertIn(b"server.worker_threads = 4 has no meaning for faf-replay", twistd.output)

        # One player's game over TCP, the other's over WebSocket; a watcher over TCP.
        tcp = Uploader(5001, "Rowan.SCFAreplay", recording("example"), [3000])
        websocket = Uploader(5001, "Zoe.SCFAreplay", recording("example"), [4100])
        yield connect(self.config["server"]["port"], tcp)
        yield connect_websocket(self.config["server"]["websocket_port"], websocket)
        watcher = Watcher(5001)
        yield connect(self.config["server"]["port"], watcher)
        yield tcp.done
        yield websocket.done

        # Scraped where FAF scrapes: port 8011's path '/', with Prometheus' own Accept header.
        families = yield self.scrape()
        self.assertEqual(self.sample(families, "replayserver_active_connections_count", category="reader"), 1)
        self.assertGreater(self.sample(families, "replayserver_received_bytes"), 0)

        # FAF's peak: every TCP connection from Traefik's one address, held.
        held = [Held() for _ in range(600)]
        for connection in held:
            yield connect(self.config["server"]["port"], connection)
        for _ in range(300):
            families = yield self.scrape()
            if self.sample(families, "replayserver_active_connections_count", category="initial") >= 600:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(
            self.sample(families, "replayserver_active_connections_count", category="initial"), 600
        )
        self.assertEqual([c for c in held if c.closed.called], [])
        self.assertNotIn(b"too many connections", twistd.output)
        for connection in held:
            connection.transport.abortConnection()

        twistd.process.signalProcess("TERM")  # Kubernetes stops the pod
        self.assertEqual((yield twistd.exited), 0)
        # Five minutes behind, the watcher had the replay header at once and what the
        # delay let through; the server's stop closes it.
        watched = yield watcher.done
        header, _ = split(recording("example"))
        self.assertTrue(recording("example").startswith(watched))
        self.assertGreaterEqual(len(watched), len(header))
        metadata, scfa = self.saved(5001)
        self.assertEqual(scfa, recording("example"))
        self.assertEqual((metadata["title"], metadata["host"]), ("Ladder: Rowan vs Zoë", "Rowan"))
        self.assertEqual(metadata["featured_mod_versions"], {"1": 3659, "2": 3659, "3": 3700})
        self.assertEqual(self.db.replay_row(5001), (1928, 1))

    @inlineCallbacks
    def scrape(self):
        code, kind, body = yield get(self.config["server"]["prometheus_port"], "/", PROMETHEUS_ACCEPT)
        self.assertEqual(code, 200)
        self.assertTrue(kind.startswith(b"application/openmetrics-text"), kind)
        return {family.name: family for family in text_string_to_metric_families(body.decode())}

    @staticmethod
    def sample(families: dict, name: str, **labels: str) -> float:
        """One sample's value (a counter's ``_total``, not its ``_created``)."""
        [value] = [
            sample.value
            for sample in families[name].samples
            if sample.name in (name, f"{name}_total") and labels.items() <= sample.labels.items()
        ]
        return value

    @inlineCallbacks
    def test_a_container_killed_mid_game_loses_nothing(self):
        self.db.standard_game(5002)
        first = self.container()
        yield self.started(first)
        stream = recording("22373098")
        cut = len(stream) * 3 // 5
        for name in ("a", "b"):
            uploader = Uploader(5002, f"{name}.SCFAreplay", stream[:cut], [4096])
            uploader.keep_open = True  # still playing when the node dies
            yield connect(self.config["server"]["port"], uploader)
        spool = self.vault / ".faf-replay-spool" / "games" / "5002"
        yield until(lambda: self.spooled(spool) == [cut, cut], timeout=30)
        first.process.signalProcess("KILL")
        self.assertEqual((yield first.exited), -9)

        second = self.container()  # a new container: its own filesystem is empty, the volume is not
        yield self.started(second)
        yield until(lambda: b"game 5002: recovered from the spool (2 upload(s)" in second.output)
        second.process.signalProcess("TERM")
        self.assertEqual((yield second.exited), 0, second.output.decode(errors="replace"))
        self.assertEqual(self.saved(5002)[1], stream[:cut])
        self.assertEqual(self.db.replay_row(5002)[1], 1)
        self.assertEqual(list(spool.parent.iterdir()), [])

    @inlineCallbacks
    def test_a_body_command_of_no_size_is_saved_and_the_server_goes_on(self):
        """``01 00 00`` in a body: a command whose size says 0. FAF's parser's own
        tick counter loops on it for ever, holding the GIL: the server froze at the
        save, unable even to stop (the soak's short run hung on a hostile upload's
        body, one bit flipped in a command's size making the count land on one).
        Saved as sent, its ticks unknown; the next game saved as ever."""
        self.db.standard_game(5003)
        self.db.game(5004, host=self.db.login("Ana"), mod=0, map_id=None)
        twistd = self.container()
        yield self.started(twistd)
        header, body = split(recording("example"))
        hostile = header + b"\x01\x00\x00" + body
        yield connect(self.config["server"]["port"], Uploader(5003, "a.SCFAreplay", hostile, [4096]))
        yield until(lambda: self.db.replay_row(5003) == (None, 1), timeout=30)
        honest = Uploader(5004, "b.SCFAreplay", recording("example"), [4096])
        yield connect(self.config["server"]["port"], honest)
        yield until(lambda: self.db.replay_row(5004) == (1928, 1), timeout=30)
        twistd.process.signalProcess("TERM")
        self.assertEqual((yield twistd.exited), 0)
        self.assertEqual(self.saved(5003)[1], hostile)
        self.assertIn(b"game 5003: its ticks cannot be counted", twistd.output)

    @staticmethod
    def spooled(folder: Path) -> list[int]:
        """Bytes of each upload the spool holds (after the uploader's name and its NUL)."""
        sizes = []
        for path in folder.glob("*.upload") if folder.exists() else ():
            with path.open("rb") as file:
                sizes.append(path.stat().st_size - file.read(64).index(b"\0") - 1)
        return sorted(sizes)

"""The Rust server's configuration (RS_CONFIG_FILE, RS_DB_PASSWORD, RUST_LOG), read as FAF has it."""

from __future__ import annotations

import os

import yaml
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.server import rust_config
from faf_replay.server.options import Options
from faf_replay.server.tap import makeService
from faf_replay.settings import Settings, SettingsError
from tests.support.logs import CapturedLogs
from tests.support.paths import DATA

PRODUCTION = DATA / "faf-production" / "config.yaml"


class Environment(SynchronousTestCase):
    """``Options`` as twistd builds it, with only the Rust server's variables set."""

    def setUp(self):
        self.environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("FAF_REPLAY_", "RS_", "RUST_"))
        }
        self.patch(os, "environ", self.environment)

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        return path

    def test_faf_production_file_as_it_is(self):
        self.environment.update(RS_CONFIG_FILE=str(PRODUCTION), RS_DB_PASSWORD="banana", RUST_LOG="info")
        options = self.parse()
        self.assertEqual(
            options.settings,
            Settings(
                port="tcp:15000",
                ws_port="tcp:15001",
                http_port="tcp:8011",
                header_timeout=21600,
                db="mysql://faf-legacy-live-replay-server@mariadb:3306/faf_lobby",
                db_pool_size=8,
                vault="/data/replays",
                zstd_level=10,
                forced_end=18000,
                grace=30,
                delay=300,
                sample_interval=1,
                quorum=2,
                log_level="info",
            ),
        )
        database = options.database
        self.assertEqual((database.host, database.port), ("mariadb", 3306))
        self.assertEqual(database.user, "faf-legacy-live-replay-server")
        self.assertEqual((database.name, database.password), ("faf_lobby", "banana"))
        notes = options.rust.notes
        self.assertIn(f"configuration from RS_CONFIG_FILE={PRODUCTION}", notes[0])
        self.assertEqual(
            [note.split(" = ")[0] for note in notes[1:]],
            ["server.worker_threads", "replay.stream_comparison_distance_b"],
        )
        self.assertTrue(all("has no meaning for faf-replay" in note for note in notes[1:]))

    def test_our_settings_win_over_the_file(self):
        self.environment.update(RS_CONFIG_FILE=str(PRODUCTION), FAF_REPLAY_GRACE="1")
        toml = self.write('delay = 5\nvault = "elsewhere"\n')
        settings = self.parse(f"--config={toml}", "--vault=mine").settings
        self.assertEqual((settings.grace, settings.delay, settings.vault), (1, 5, "mine"))
        self.assertEqual(settings.quorum, 2)  # from the file, as nothing else says otherwise

    def test_password_from_our_variable_or_file_wins(self):
        self.environment.update(RS_CONFIG_FILE=str(PRODUCTION), RS_DB_PASSWORD="rust")
        self.assertEqual(self.parse().database.password, "rust")
        self.environment["FAF_REPLAY_DB_PASSWORD"] = "ours"
        self.assertEqual(self.parse().database.password, "ours")

    def test_without_the_variable_nothing_is_read(self):
        self.environment.update(RS_DB_PASSWORD="x", RUST_LOG="debug")
        options = self.parse()
        self.assertIsNone(options.rust)
        self.assertEqual(options.settings, Settings())

    def test_notes_are_logged_at_startup(self):
        vault = self.mktemp()
        self.environment.update(RS_CONFIG_FILE=self.write(f"storage:\n  vault_path: {vault}\n"))
        logs = CapturedLogs(self)
        makeService(self.parse("--http-port=off"), MemoryReactorClock())
        self.assertEqual(len(logs.matching("configuration from RS_CONFIG_FILE=")), 1)

    def test_a_server_without_its_tcp_port(self):
        vault = self.mktemp()
        config = (
            f"server:\n  websocket_port: 15001\n  prometheus_port: 8011\nstorage:\n  vault_path: {vault}\n"
        )
        self.environment.update(RS_CONFIG_FILE=self.write(config))
        service = makeService(self.parse(), MemoryReactorClock())
        self.assertEqual(sorted(service.listeners), ["http", "websocket"])

    def test_every_bad_file_is_a_usage_error(self):
        for text, message in [
            ("server: [1, 2]\n", "server must be a mapping"),
            ("colour: red\n", "unknown section(s): colour"),
            ("server:\n  port: 15000\n  colour: red\n", "unknown key(s): server.colour"),
            ("server:\n  port: '15000'\n", "server.port must be a port number (1-65535), not '15000'"),
            ("server:\n  port: 70000\n", "server.port must be a port number"),
            ("server:\n  port: true\n", "server.port must be a port number"),
            ("server:\n  prometheus_port: 8011\n", "server needs port, websocket_port or both"),
            ("replay:\n  delay_s: 0\n", "replay.delay_s must be a number of seconds, more than zero"),
            ("replay:\n  delay_s: soon\n", "replay.delay_s must be a number of seconds"),
            ("replay:\n  merge_quorum_size: 1.5\n", "replay.merge_quorum_size must be a whole number"),
            (
                "storage:\n  compression_level: 30\n",
                "storage.compression_level (zstd_level must be between 1",
            ),
            ("storage:\n  vault_path: ''\n", "storage.vault_path must be a non-empty string"),
            ("database:\n  host: db\n", "database needs user, name"),
            ("database:\n  host: db\n  user: u\n  name: n\n  port: 0\n", "database.port must be a port"),
            ("server: {port: 1\n", "is not valid YAML"),
            ("- just\n- a list\n", "the file must be a mapping"),
        ]:
            self.environment["RS_CONFIG_FILE"] = path = self.write(text)
            with self.assertRaises(usage.UsageError, msg=text) as caught:
                self.parse()
            self.assertIn(message, str(caught.exception), text)
            self.assertIn(path, str(caught.exception))
        self.environment["RS_CONFIG_FILE"] = "/nonexistent/config.yaml"
        with self.assertRaises(usage.UsageError) as caught:
            self.parse()
        self.assertIn("cannot read RS_CONFIG_FILE file /nonexistent/config.yaml", str(caught.exception))
        self.environment["RS_CONFIG_FILE"] = str(PRODUCTION)
        self.environment["RUST_LOG"] = "loud"
        with self.assertRaises(usage.UsageError) as caught:
            self.parse()
        self.assertIn("RUST_LOG must be one of off, error, warn, info, debug, trace", str(caught.exception))


class Parse(SynchronousTestCase):
    def test_a_port_left_out_is_not_listened_on(self):
        only_websocket = rust_config.parse({"server": {"websocket_port": 15001}})
        settings = Settings.from_values(only_websocket.values)
        self.assertEqual((settings.port, settings.ws_port), (None, "tcp:15001"))
        only_tcp = Settings.from_values(rust_config.parse({"server": {"port": 15000}}).values)
        self.assertEqual((only_tcp.port, only_tcp.ws_port), ("tcp:15000", None))

    def test_sections_left_out_keep_our_defaults(self):
        config = rust_config.parse({"replay": {"delay_s": 60.5}})
        settings = Settings.from_values(config.values)
        self.assertEqual(settings.replace(delay=300), Settings())
        self.assertEqual(settings.delay, 60.5)
        self.assertEqual(rust_config.parse(None).values, {})
        self.assertIsNone(Settings.from_values(config.values).db)  # no database section: standalone

    def test_database_url_quotes_what_needs_it(self):
        config = rust_config.parse({"database": {"host": "::1", "port": 3307, "user": "a@b", "name": "x/y"}})
        self.assertEqual(config.values["db"], "mysql://a%40b@[::1]:3307/x%2Fy")
        config = rust_config.parse({"database": {"host": "db", "user": "u", "name": "n", "password": "p"}})
        self.assertEqual((config.values["db"], config.password), ("mysql://u@db:3306/n", "p"))

    def test_every_documented_key_of_the_rust_server(self):
        """Each key of the Rust server's docs/usage.rst, with a value none of our
        defaults has, lands in its setting (a reader that ignored one would
        leave the default there)."""
        documented = {
            "server": {
                "port": 25000,
                "websocket_port": 25001,
                "prometheus_port": 8001,
                "worker_threads": 8,
                "connection_accept_timeout_s": 1234,
            },
            "database": {
                "pool_size": 5,
                "host": "db.example",
                "port": 3307,
                "user": "replay",
                "name": "faf_test",
                "password": "from-the-file",
            },
            "storage": {"vault_path": "/srv/vault", "compression_level": 19},
            "replay": {
                "forced_timeout_s": 7200,
                "time_with_zero_writers_to_end_replay_s": 45,
                "delay_s": 120,
                "update_interval_s": 0.5,
                "merge_quorum_size": 3,
                "stream_comparison_distance_b": 4096,
            },
        }
        config = rust_config.parse(yaml.safe_load(yaml.safe_dump(documented)))
        settings = Settings.from_values(config.values)
        self.assertEqual(
            settings,
            Settings(
                port="tcp:25000",
                ws_port="tcp:25001",
                http_port="tcp:8001",
                header_timeout=1234,
                db="mysql://replay@db.example:3307/faf_test",
                db_pool_size=5,
                vault="/srv/vault",
                zstd_level=19,
                forced_end=7200,
                grace=45,
                delay=120,
                sample_interval=0.5,
                quorum=3,
            ),
        )
        self.assertEqual(config.password, "from-the-file")
        self.assertEqual(
            sorted(note.split(" = ")[0] for note in config.notes),
            ["replay.stream_comparison_distance_b", "server.worker_threads"],
        )
        # The test itself: every setting a key lands in was given a value unlike its default.
        defaults = Settings()
        landed = [setting for keys in rust_config._KEYS.values() for setting, _ in keys.values() if setting]
        self.assertEqual(len(landed), 12)
        for setting in [*landed, "db"]:
            self.assertNotEqual(getattr(settings, setting), getattr(defaults, setting), setting)

    def test_rust_log(self):
        for value, level in [
            ("info", "info"),
            ("WARN", "warn"),
            ("trace", "debug"),
            ("off", "critical"),
            ("warn,faf_rust_replayserver=debug", "debug"),
            ("faf_rust_replayserver::replay=error,info", "error"),
            ("info,hyper=warn", "info"),
            ("hyper=warn", "error"),
            ("info/some regex", "info"),
            ("", "error"),
        ]:
            self.assertEqual(rust_config.log_level(value), level, value)
        self.assertRaises(SettingsError, rust_config.log_level, "verbose")

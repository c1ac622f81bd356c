"""Every setting is documented, in the example file, and readable from the environment."""

from __future__ import annotations

import dataclasses
import os
import tomllib

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.server.options import FLAGS, Options, environment_name, option_name
from faf_replay.settings import Settings, SettingsError, markdown_table, shown_default
from tests.support.paths import REPOSITORY

ROOT = REPOSITORY


def parse(*argv: str) -> Settings:
    options = Options()
    options.parseOptions(list(argv))
    return options.settings


class Documented(SynchronousTestCase):
    def test_readme_lists_every_option(self):
        """The README's table is the declarations' (settings.markdown_table), word for word."""
        readme = (ROOT / "README.md").read_text()
        missing = [name for name in Settings.names() if f"`--{option_name(name)}`" not in readme]
        self.assertEqual(missing, [])
        self.assertIn(markdown_table(), readme)

    def test_example_file_has_every_key_and_parses(self):
        path = ROOT / "faf-replay.example.toml"
        text = path.read_text()
        keys = set(tomllib.loads(text))
        commented = {
            line[2:].split(" =")[0] for line in text.splitlines() if line.startswith("# ") and " = " in line
        }
        self.assertEqual(set(Settings.names()) - keys - commented, set())
        options = Options()
        options.parseOptions([f"--config={path}"])
        self.assertEqual(options.settings.ws_port, "tcp:15001")
        self.assertEqual(options.settings.max_connections, Settings().max_connections)


class Environment(SynchronousTestCase):
    def setUp(self):
        self.environment = {k: v for k, v in os.environ.items() if not k.startswith("FAF_REPLAY_")}
        self.patch(os, "environ", self.environment)

    def test_every_setting_has_a_variable(self):
        self.environment[environment_name("delay")] = "12.5"
        self.environment[environment_name("max_connections")] = "99"
        self.environment[environment_name("http_port")] = "off"
        self.environment[environment_name("db")] = "mysql://faf@db/faf"
        self.environment[environment_name("require_known_game")] = "yes"
        settings = parse()
        self.assertEqual((settings.delay, settings.max_connections, settings.http_port), (12.5, 99, None))
        self.assertTrue(settings.require_known_game)
        self.assertEqual(environment_name("zstd_level"), "FAF_REPLAY_ZSTD_LEVEL")

    def test_command_line_beats_environment_beats_file(self):
        path = self.mktemp()
        with open(path, "w") as file:
            file.write("delay = 1\ngrace = 2\nquorum = 3\n")
        self.environment["FAF_REPLAY_GRACE"] = "20"
        self.environment["FAF_REPLAY_QUORUM"] = "30"
        settings = parse(f"--config={path}", "--quorum=300")
        self.assertEqual((settings.delay, settings.grace, settings.quorum), (1, 20, 300))

    def test_bad_values_name_their_variable(self):
        for name, value, message in [
            ("FAF_REPLAY_DELAY", "soon", "delay must be a number of seconds"),
            ("FAF_REPLAY_REQUIRE_KNOWN_GAME", "maybe", "FAF_REPLAY_REQUIRE_KNOWN_GAME must be true or false"),
            ("FAF_REPLAY_LOG_FORMAT", "xml", "log_format must be text or json"),
            ("FAF_REPLAY_WS_PORT", "tcp:nope", "ws_port 'tcp:nope' is not an endpoint description"),
        ]:
            self.environment.clear()
            self.environment[name] = value
            with self.assertRaises(usage.UsageError) as caught:
                parse()
            self.assertIn(message, str(caught.exception))

    def test_flags_from_the_environment_are_only_flags(self):
        self.assertEqual(sorted(FLAGS), ["require_known_game"])


class DeclaredOnce(SynchronousTestCase):
    """Each setting is one declaration (settings.py): its check goes with it."""

    def test_every_number_has_its_check(self):
        unchecked = [
            field.name
            for field in dataclasses.fields(Settings)
            if field.type in ("float", "int") and field.metadata.get("check") is None
        ]
        self.assertEqual(unchecked, [])

    def test_every_number_refuses_what_no_setting_takes(self):
        for field in dataclasses.fields(Settings):
            if field.type not in ("float", "int"):
                continue
            bad = float("nan") if field.type == "float" else -1
            with self.assertRaises(SettingsError, msg=field.name) as caught:
                Settings(**{field.name: bad})
            self.assertIn(field.name, str(caught.exception))

    def test_help_defaults_and_kinds_come_from_the_declarations(self):
        self.assertEqual(Settings.endpoints(), ["port", "ws_port", "http_port"])
        self.assertEqual(Settings.flags(), ["require_known_game"])
        self.assertEqual(shown_default("spool"), "`.faf-replay-spool` in the vault")
        self.assertEqual(shown_default("delay"), "`300`")
        self.assertEqual(shown_default("require_known_game"), "off")
        usage_text = " ".join(str(Options()).split())
        self.assertIn("seconds watchers stay behind the game [default: 300]", usage_text)

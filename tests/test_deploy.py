"""The deployment examples start the server the way they say."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from faf_replay.options import Options
from tests.processes import run_twistd

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_command() -> tuple[list[str], list[str]]:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    command = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    return entrypoint, command


def unit_command() -> list[str]:
    text = (ROOT / "deploy" / "faf-replay.service").read_text()
    return shlex.split(re.search(r"^ExecStart=(.*)$", text, re.M).group(1))


class CommandLines(SynchronousTestCase):
    def test_the_image_runs_twistd_faf_replay_with_options_that_parse(self):
        entrypoint, command = dockerfile_command()
        self.assertEqual(entrypoint, ["twistd", "-n", "--pidfile=", "faf-replay"])
        options = Options()
        options.parseOptions(command)
        self.assertEqual(
            (options.settings.port, options.settings.ws_port, options.settings.http_port),
            ("tcp:15000", "tcp:15001", "tcp:8011"),
        )

    def test_the_unit_runs_twistd_faf_replay(self):
        argv = unit_command()
        self.assertTrue(argv[0].endswith("/twistd"))
        self.assertEqual(argv[1:4], ["-n", "--pidfile=", "faf-replay"])
        # with the example configuration in place of /etc/faf-replay/faf-replay.toml
        options = Options()
        example = str(ROOT / "faf-replay.example.toml")
        options.parseOptions([example if arg.endswith(".toml") else arg for arg in argv[4:]])
        self.assertEqual(options.settings.ws_port, "tcp:15001")


class EntryPoint(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_help_from_the_image_entry_point(self):
        entrypoint, _ = dockerfile_command()
        cwd = self.mktemp()
        os.makedirs(cwd)
        twistd = run_twistd(self, cwd, *entrypoint[4:], "--help")  # run_twistd adds entrypoint[1:4]
        self.assertEqual((yield twistd.exited), 0)
        self.assertIn(b"--ws-port", twistd.output)

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.server.tap import Options
from faf_replay.settings import Settings, SettingsError


def parse(*argv: str) -> Settings:
    options = Options()
    options.parseOptions(list(argv))
    return options.settings


class CommandLine(SynchronousTestCase):
    def test_defaults_are_the_anchors_production_values(self):
        settings = parse()
        self.assertEqual(settings.port, "tcp:15000")
        self.assertEqual(settings.vault, "replays")
        self.assertEqual((settings.delay, settings.sample_interval), (300, 1))
        self.assertEqual((settings.grace, settings.forced_end, settings.header_timeout), (30, 18000, 21600))
        self.assertEqual((settings.quorum, settings.zstd_level), (2, 10))

    def test_every_option(self):
        settings = parse(
            "--port=tcp:1234",
            "--vault=/srv/replays",
            "--delay=0.25",
            "--sample-interval=0.05",
            "--grace=1.5",
            "--forced-end=60",
            "--header-timeout=2",
            "--quorum=3",
            "--zstd-level=19",
            "--stall-timeout=5",
            "--linger=0",
            "--drain-timeout=9",
        )
        self.assertEqual(
            settings,
            Settings(
                port="tcp:1234",
                vault="/srv/replays",
                delay=0.25,
                sample_interval=0.05,
                grace=1.5,
                forced_end=60,
                header_timeout=2,
                quorum=3,
                zstd_level=19,
                stall_timeout=5,
                linger=0,
                drain_timeout=9,
            ),
        )

    def test_bad_values_are_usage_errors(self):
        for argv, message in [
            (["--delay=abc"], "delay must be a number of seconds"),
            (["--delay=-1"], "delay must be a number of seconds"),
            (["--delay=nan"], "delay must be a number of seconds"),
            (["--sample-interval=0"], "sample_interval must be a number of seconds, more than zero"),
            (["--quorum=0"], "quorum must be at least 1"),
            (["--quorum=1.5"], "quorum must be a whole number"),
            (["--zstd-level=30"], "zstd_level must be between 1 and 22"),
            (["--port="], "port must be"),
            (["--port=15000"], "not an endpoint description"),
            (["--port=tcp:abc"], "not an endpoint description"),
            (["--port=tcp:1:colour=red"], "not an endpoint description"),
            (["--no-such-option=1"], "no-such-option"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                parse(*argv)
            self.assertIn(message, str(caught.exception))


class ConfigFile(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as file:
            file.write(text)
        return path

    def test_file_values_and_command_line_wins(self):
        path = self.write('port = "tcp:2000"\ndelay = 5\nzstd-level = 3\nvault = "v"\n')
        settings = parse(f"--config={path}", "--delay=7")
        self.assertEqual(
            (settings.port, settings.delay, settings.zstd_level, settings.vault), ("tcp:2000", 7, 3, "v")
        )

    def test_file_errors(self):
        for text, message in [
            ("delay = 'soon'\n", "delay must be a number of seconds"),
            ("quorum = true\n", "quorum must be a whole number, not True"),
            ("port = 15000\n", "port must be a string, not 15000"),
            ("colour = 'red'\n", "unknown setting(s): colour"),
            ("delay = = 1\n", "not valid TOML"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                parse(f"--config={self.write(text)}")
            self.assertIn(message, str(caught.exception))
        with self.assertRaises(usage.UsageError) as caught:
            parse("--config=/nonexistent/faf-replay.toml")
        self.assertIn("cannot read config file", str(caught.exception))

    def test_settings_check_directly(self):
        self.assertRaises(SettingsError, Settings, grace=-1)
        self.assertRaises(SettingsError, Settings, linger=float("inf"))
        self.assertEqual(Settings(delay=0).delay, 0)


class EdgeOptions(SynchronousTestCase):
    """The WebSocket pings and Cloudflare's ranges on the command line."""

    def options(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_pings_on_by_default_and_zero_turns_them_off(self):
        self.assertEqual((parse().ws_ping_interval, parse().ws_ping_timeout), (30, 30))
        settings = parse("--ws-ping-interval=0", "--ws-ping-timeout=2.5")
        self.assertEqual((settings.ws_ping_interval, settings.ws_ping_timeout), (0, 2.5))
        for argv, message in [
            (["--ws-ping-interval=-1"], "ws_ping_interval must be a number of seconds, zero or more"),
            (["--ws-ping-timeout=0"], "ws_ping_timeout must be a number of seconds, more than zero"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                parse(*argv)
            self.assertIn(message, str(caught.exception))

    def test_cloudflare_ranges_from_a_file(self):
        self.assertTrue(self.options().trusted.is_edge("173.245.48.5"))
        path = self.mktemp()
        with open(path, "w") as file:
            file.write("192.0.2.0/24\n2001:db8:cf::/48\n")
        trusted = self.options(f"--cloudflare-ranges-file={path}").trusted
        self.assertTrue(trusted.is_edge("192.0.2.9"))
        self.assertFalse(trusted.is_edge("173.245.48.5"))
        self.assertTrue(trusted.trusts("10.0.0.1"))  # private stays
        self.assertFalse(self.options("--trusted-proxies=private").trusted.is_edge("173.245.48.5"))
        with open(path, "w") as file:
            file.write("192.0.2.0/24\nnot a range\n")
        for argv, message in [
            ([f"--cloudflare-ranges-file={path}"], "line 2: 'not a range' is not a network"),
            (["--cloudflare-ranges-file=/nonexistent/ips"], "cannot read cloudflare_ranges_file"),
            (["--trusted-proxies=private,cloudfare"], "'cloudfare' is not an address"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                self.options(*argv)
            self.assertIn(message, str(caught.exception))

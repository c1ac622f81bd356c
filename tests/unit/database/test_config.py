import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.database.config import PASSWORD_VARIABLE, DatabaseConfig, DatabaseConfigError
from faf_replay.server.tap import Options


class Parsing(SynchronousTestCase):
    def test_url(self):
        config = DatabaseConfig.parse("mysql://faf-replay@db.faforever.com:3307/faf_lobby", "pw")
        self.assertEqual(
            (config.host, config.port, config.user, config.name, config.password),
            ("db.faforever.com", 3307, "faf-replay", "faf_lobby", "pw"),
        )
        self.assertEqual(DatabaseConfig.parse("mysql://u@h/n").port, 3306)
        self.assertEqual(DatabaseConfig.parse("mysql://u%40x@[::1]:1/n").user, "u@x")
        self.assertEqual(DatabaseConfig.parse("mysql://u@[::1]:1/n").host, "::1")

    def test_password_never_shows(self):
        config = DatabaseConfig.parse("mysql://u@h:1/n", "hunter2")
        self.assertNotIn("hunter2", repr(config))
        self.assertNotIn("hunter2", config.describe())

    def test_bad_urls(self):
        for url in [
            "postgres://u@h/n",
            "mysql://h/n",
            "mysql://u@h",
            "mysql://u@h/",
            "mysql://u@h/a/b",
            "mysql://u@h:port/n",
            "u@h/n",
        ]:
            self.assertRaises(DatabaseConfigError, DatabaseConfig.parse, url)

    def test_password_in_the_url_is_refused(self):
        with self.assertRaises(DatabaseConfigError) as caught:
            DatabaseConfig.parse("mysql://u:secret@h/n")
        self.assertIn(PASSWORD_VARIABLE, str(caught.exception))
        self.assertNotIn("secret", str(caught.exception))

    def test_password_sources(self):
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as file:
            file.write("from-file\n")
        self.assertEqual(DatabaseConfig.from_settings("mysql://u@h/n", path, {}).password, "from-file")
        environment = {PASSWORD_VARIABLE: "from-env"}
        self.assertEqual(
            DatabaseConfig.from_settings("mysql://u@h/n", None, environment).password, "from-env"
        )
        self.assertEqual(DatabaseConfig.from_settings("mysql://u@h/n", None, {}).password, "")
        with self.assertRaises(DatabaseConfigError):
            DatabaseConfig.from_settings("mysql://u@h/n", "/nonexistent/secret", {})


class CommandLine(SynchronousTestCase):
    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_db_options(self):
        self.patch(os, "environ", {PASSWORD_VARIABLE: "pw"})
        options = self.parse(
            "--db=mysql://faf@127.0.0.1:3306/faf", "--require-known-game", "--known-game-window=60"
        )
        self.assertEqual(options.database.password, "pw")
        self.assertTrue(options.settings.require_known_game)
        self.assertEqual(options.settings.known_game_window, 60)

    def test_standalone_by_default(self):
        options = self.parse()
        self.assertIsNone(options.database)
        self.assertFalse(options.settings.require_known_game)

    def test_usage_errors(self):
        for argv, message in [
            (["--db=mysql://u:pw@h/n"], "must not carry a password"),
            (["--db=nonsense"], "mysql://USER@HOST:PORT/NAME"),
            (["--require-known-game"], "require_known_game needs a database"),
            (["--db=mysql://u@h/n", "--db-password-file=/nonexistent"], "cannot read db_password_file"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                self.parse(*argv)
            self.assertIn(message, str(caught.exception))

    def test_config_file_flags(self):
        path = self.mktemp()
        with open(path, "w") as file:
            file.write('db = "mysql://u@h/n"\nrequire_known_game = true\n')
        self.assertTrue(self.parse(f"--config={path}").settings.require_known_game)
        with open(path, "w") as file:
            file.write('db = "mysql://u@h/n"\nrequire_known_game = "yes"\n')
        with self.assertRaises(usage.UsageError) as caught:
            self.parse(f"--config={path}")
        self.assertIn("require_known_game must be true or false", str(caught.exception))

"""The README's layout names every module of the package, in its folder's table."""

import re

from twisted.trial.unittest import SynchronousTestCase

from tests.support.paths import REPOSITORY

ROOT = REPOSITORY
PACKAGE = ROOT / "faf_replay"


class Layout(SynchronousTestCase):
    def test_every_module_is_in_the_readme(self):
        readme = (ROOT / "README.md").read_text()
        layout = readme[readme.index("## Layout") :]
        layout = layout[: layout.index("\n## ")] if "\n## " in layout else layout
        sections = dict(
            re.findall(r"^`faf_replay/(\w+)/`: [^\n]*\n(.*?)(?=^`faf_replay/\w+/`:|\Z)", layout, re.M | re.S)
        )
        missing = []
        for path in sorted(PACKAGE.rglob("*.py")):
            relative = path.relative_to(PACKAGE)
            if path.name == "__init__.py":
                continue
            if len(relative.parts) == 1 or relative.parts[0] not in sections:
                found = f"`faf_replay/{relative.as_posix()}`" in layout
            else:
                found = f"| `{path.name}` |" in sections[relative.parts[0]]
            if not found:
                missing.append(relative.as_posix())
        self.assertEqual(missing, [])

    def test_unit_tests_mirror_the_package(self):
        """tests/unit/<folder>/test_<module>.py tests faf_replay/<folder>/<module>.py."""
        strays = []
        for path in sorted((ROOT / "tests" / "unit").rglob("test_*.py")):
            relative = path.relative_to(ROOT / "tests" / "unit")
            module = PACKAGE / relative.parent / (path.stem.removeprefix("test_") + ".py")
            if not module.exists() and path.name != "test_layout.py":  # this one tests the README
                strays.append(relative.as_posix())
        self.assertEqual(strays, [])

    def test_every_folder_says_what_it_is_for(self):
        for init in PACKAGE.glob("*/__init__.py"):
            self.assertTrue(init.read_text().startswith('"""'), init)

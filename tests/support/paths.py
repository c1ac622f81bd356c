"""Where things are, for tests that read files of the repository."""

from pathlib import Path

#: The repository's root.
REPOSITORY = Path(__file__).resolve().parents[2]
#: The real recordings the tests use (tests/data, with their provenance).
DATA = REPOSITORY / "tests" / "data"

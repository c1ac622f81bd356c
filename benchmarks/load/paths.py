"""Where the benchmark finds this checkout and the recordings."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


DATA = ROOT / "tests" / "data"

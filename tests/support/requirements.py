"""What some tests need of the machine, and what happens where it is missing.

A test that needs MariaDB, a browser, FUSE, network namespaces, podman or root
calls :func:`unavailable` when the machine lacks it: the test is skipped, with
how to get what it needs, unless ``FAF_REPLAY_REQUIRE_<NAME>=1`` says it is
required (``.ci/run`` sets every one): then it fails. One rule, one place.
"""

from __future__ import annotations

import os
from typing import NoReturn

from twisted.trial.unittest import SkipTest

#: Every requirement, with its variable's name: FAF_REPLAY_REQUIRE_<NAME>.
NAMES = ("DB", "BROWSER", "FUSE", "IMAGE", "NETNS", "ROOT")


class RequirementMissing(RuntimeError):
    """A required part of the machine is not there (a failure, not a skip)."""


def variable(name: str) -> str:
    assert name in NAMES, name
    return f"FAF_REPLAY_REQUIRE_{name}"


def required(name: str) -> bool:
    return os.environ.get(variable(name)) == "1"


def unavailable(name: str, why: str, how: str = "") -> NoReturn:
    """Skip the calling test because ``why`` (``how``: how to get it), or fail
    it when the requirement ``name`` is required."""
    if required(name):
        raise RequirementMissing(f"{why}; {variable(name)}=1 makes this a failure")
    raise SkipTest(f"{why} ({how})" if how else why)

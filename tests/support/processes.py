"""``twistd faf-replay`` as a child process of a test."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import TestCase

from tests.support.paths import REPOSITORY

ROOT = REPOSITORY
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class Twistd(ProcessProtocol):
    """Runs twistd, collects its output and tells when it listens and when it exits."""

    def __init__(self) -> None:
        self.output = b""
        self.port: int | None = None
        self.exited: Deferred = Deferred()
        self._listening: Deferred | None = None
        self.process: Any = None  # the IProcessTransport, once spawned

    def listening(self) -> Deferred:
        """Fires with the game port; fails if twistd exits first."""
        self._listening = Deferred()
        if self.port is not None:
            self._listening.callback(self.port)
        elif self.exited.called:
            self._listening.errback(RuntimeError(self.output.decode(errors="replace")))
        return self._listening

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = re.search(rb"ReplayFactory starting on (\d+)", self.output)
        if match and self.port is None:
            self.port = int(match.group(1))
            if self._listening is not None:
                self._listening.callback(self.port)

    @property
    def ports(self) -> dict[str, int]:
        """Every port it listens on, by factory: ``ReplayFactory``, ``WebSocketReplayFactory``, ``Site``."""
        found = re.findall(rb"(\w+)(?: \(PROXY\))? starting on (\d+)", self.output)
        return {name.decode(): int(port) for name, port in found}

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        code = 0 if reason.check(ProcessDone) else reason.value.exitCode
        if reason.check(ProcessTerminated) and reason.value.signal is not None:
            code = -reason.value.signal
        if self._listening is not None and not self._listening.called:
            self._listening.errback(RuntimeError(self.output.decode(errors="replace")))
        self.exited.callback(code)


def run_twistd(
    test: TestCase,
    cwd: str,
    *args: str,
    env: dict[str, str] | None = None,
    as_is: bool = False,
    uid: int | None = None,
    replace_environment: bool = False,
) -> Twistd:
    """Start ``twistd -n faf-replay *args`` in ``cwd`` with this checkout's code;
    killed after the test if still running. ``protocol.process`` signals it.
    Unless ``as_is``, the HTTP port is off (no fixed port taken by the tests);
    ``uid`` runs it as that user (and its own group); ``replace_environment``
    gives it ``env`` alone instead of the test's environment and ``env``."""
    protocol = Twistd()
    environment = {**({} if replace_environment else os.environ), **(env or {}), "PYTHONPATH": str(ROOT)}
    if not as_is and not any(arg.startswith("--http-port") for arg in args) and "--help" not in args:
        args = (*args, "--http-port=off")
    argv = [*TWISTD, "-n", "--pidfile=", "faf-replay", *args]
    executable = sys.executable
    if uid is not None:  # setpriv (util-linux) drops root's rights and groups before Python starts
        executable = "/usr/bin/setpriv"
        argv = [executable, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable, *argv[1:]]
    protocol.process = reactor.spawnProcess(protocol, executable, argv, env=environment, path=cwd)

    def kill_leftover():
        if not protocol.exited.called:
            with contextlib.suppress(ProcessExitedAlready):  # it exited; the news is on its way
                protocol.process.signalProcess("KILL")
            return protocol.exited
        return None

    test.addCleanup(kill_leftover)
    return protocol

"""Capture what the server logs, to assert on the lines an operator would read."""

from __future__ import annotations

from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase


class CapturedLogs:
    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, level: LogLevel | None = None, namespace: str = "faf_replay") -> list[str]:
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_namespace", "").startswith(namespace)
            and (level is None or event.get("log_level") == level)
        ]

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines() if text in line]

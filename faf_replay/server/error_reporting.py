"""Optional error reporting to Sentry (``--sentry-dsn``; never required).

Unexpected exceptions reach the log as failures (``log.failure``, or an
unhandled error in a Deferred); with a DSN each of them is also sent to Sentry.
The ``sentry-sdk`` package is imported only then.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.python import usage
from zope.interface import implementer


def start(dsn: str) -> SentryObserver:
    """Initialise Sentry and send it every logged failure from now on."""
    try:
        import sentry_sdk  # noqa: PLC0415 - optional, and only with a DSN
    except ImportError:
        raise usage.UsageError("--sentry-dsn needs the sentry-sdk package (pip install sentry-sdk)") from None
    sentry_sdk.init(dsn=dsn, default_integrations=False)
    observer = SentryObserver(sentry_sdk.capture_exception)
    globalLogPublisher.addObserver(observer)
    return observer


@implementer(ILogObserver)
class SentryObserver:
    """Sends every logged failure (an exception with its traceback) to Sentry."""

    def __init__(self, capture: Any) -> None:
        self._capture = capture

    def __call__(self, event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        if failure is None or event.get("log_level") not in (LogLevel.error, LogLevel.critical):
            return
        try:
            self._capture((failure.type, failure.value, failure.getTracebackObject()))
        except Exception:
            pass

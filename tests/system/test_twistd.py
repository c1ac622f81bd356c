"""``twistd faf-replay`` as a real process: usage errors, a taken port, SIGTERM."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import fafreplay
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.selectreactor import SelectReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from faf_replay.save.vault import vault_path
from faf_replay.server.signals import ExitCleanlyOnSignal
from tests.support.clients import Uploader, Watcher, connect
from tests.support.paths import REPOSITORY
from tests.support.processes import Twistd, run_twistd
from tests.support.recordings import recording


class TwistdProcess(TestCase):
    timeout = 60

    def run_twistd(self, *args: str) -> Twistd:
        self.cwd = self.mktemp()
        os.makedirs(self.cwd)
        protocol = run_twistd(self, self.cwd, *args)
        self.process = protocol.process
        return protocol

    @inlineCallbacks
    def test_help_lists_every_option(self):
        twistd = self.run_twistd("--help")
        code = yield twistd.exited
        self.assertEqual(code, 0)
        for option in ["--port", "--vault", "--delay", "--sample-interval", "--grace", "--forced-end",
                       "--header-timeout", "--quorum", "--zstd-level", "--config"]:  # fmt: skip
            self.assertIn(option.encode(), twistd.output)

    @inlineCallbacks
    def test_bad_value_is_a_usage_error(self):
        twistd = self.run_twistd("--delay=soon")
        code = yield twistd.exited
        self.assertNotEqual(code, 0)
        self.assertIn(b"delay must be a number of seconds", twistd.output)

    @inlineCallbacks
    def test_taken_port_fails(self):
        taken = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        twistd = self.run_twistd(f"--port=tcp:{taken.getHost().port}:interface=127.0.0.1")
        code = yield twistd.exited
        self.assertNotEqual(code, 0)
        self.assertIn(b"Address already in use", twistd.output)

    @inlineCallbacks
    def test_sigterm_saves_every_running_replay_and_exits_0(self):
        twistd = self.run_twistd(
            "--port=tcp:0:interface=127.0.0.1", "--sample-interval=0.05", "--delay=0.2", "--vault=vault"
        )
        port = yield twistd.listening()
        uploaders = []
        for game_id, name in [(100, "example"), (101, "8805603"), (102, "22373098")]:
            uploader = Uploader(game_id, "p.SCFAreplay", recording(name), [3000])
            uploader.keep_open = True  # still playing when the server is stopped
            uploaders.append(uploader)
            yield connect(port, uploader)
        for uploader in uploaders:
            yield uploader.sent_all
        watcher = Watcher(100)
        yield connect(port, watcher)
        yield watcher.first_data
        self.process.signalProcess("TERM")
        code = yield twistd.exited
        self.assertEqual(code, 0, twistd.output.decode(errors="replace"))
        for uploader in uploaders:
            yield uploader.done
        yield watcher.done
        for game_id, name in [(100, "example"), (101, "8805603"), (102, "22373098")]:
            path = vault_path(Path(self.cwd, "vault"), game_id)
            with path.open("rb") as file:
                self.assertEqual(fafreplay.extract_scfa(file), recording(name))
        self.assertIn(b"shutting down: ending 3 running replay(s)", twistd.output)
        self.assertRegex(twistd.output, rb"garbage collector: [1-9][0-9]{3,} startup objects frozen")

    @inlineCallbacks
    def test_sigterm_right_after_startup_exits_0(self):
        """A signal that comes as soon as the ports listen, while the reactor is
        still starting (installing its own handlers, freezing startup objects),
        is a clean stop too. Sent the moment twistd says it listens, five times."""
        for attempt in range(5):
            twistd = self.run_twistd("--port=tcp:0:interface=127.0.0.1", "--vault=vault")
            signalled = twistd.listening().addCallback(lambda _: self.process.signalProcess("TERM"))
            code = yield twistd.exited
            yield signalled
            self.assertEqual(code, 0, f"attempt {attempt}: " + twistd.output.decode(errors="replace"))
            self.assertIn(b"received SIGTERM: stopping", twistd.output)

    @inlineCallbacks
    def test_default_vault_is_replays_in_the_working_directory(self):
        twistd = self.run_twistd("--port=tcp:0:interface=127.0.0.1", "--grace=0.1", "--delay=0")
        port = yield twistd.listening()
        uploader = Uploader(5, "p.SCFAreplay", recording("8805603"), [10000])
        yield connect(port, uploader)
        yield uploader.done
        path = vault_path(Path(self.cwd, "replays"), 5)
        for _ in range(100):
            if path.exists():
                break
            yield deferLaterSeconds(0.05)
        self.process.signalProcess("INT")
        self.assertEqual((yield twistd.exited), 0)
        self.assertEqual(fafreplay.extract_scfa(io.BytesIO(path.read_bytes())), recording("8805603"))


def deferLaterSeconds(seconds: float) -> Deferred:
    from twisted.internet.task import deferLater  # noqa: PLC0415

    return deferLater(reactor, seconds, lambda: None)


#: SIGTERM sent while the reactor's handlers are in place, in the order makeService and
#: twistd give: the signals held, then a thread started, then the reactor started. Prints
#: the lines logged about SIGTERM (ours: "received SIGTERM: stopping"; the reactor's:
#: "Received SIGTERM, shutting down.") and whether the mask was restored.
HELD_SIGNAL = """
import os, signal, threading, time
from twisted.internet.selectreactor import SelectReactor
from twisted.logger import formatEvent, globalLogPublisher
from faf_replay.server.signals import ExitCleanlyOnSignal, hold_stop_signals

lines = []
globalLogPublisher.addObserver(lambda event: lines.append(formatEvent(event)))
mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
reactor = SelectReactor()

def send():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # for a thread not holding it to take it, and its handler to run

reactor.addSystemEventTrigger("during", "startup", send)
held = hold_stop_signals()
stop = threading.Event()
thread = threading.Thread(target=stop.wait)
thread.start()
service = ExitCleanlyOnSignal(reactor, held)
service.privilegedStartService()
service.startService()
reactor.startRunning(installSignalHandlers=True)
stop.set()
thread.join()
for line in lines:
    if "SIGTERM" in line:
        print(line)
if signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask:
    print("mask restored")
"""


class SignalHandlersInPlace(SynchronousTestCase):
    """Whatever runs once the reactor has started (the GC freeze, which can take
    a while) already runs under our handlers, not the reactor's, whose SIGTERM
    makes twistd die by the signal after a clean stop. A reactor of its own,
    started here, not the test's."""

    def test_ours_replace_the_reactors_before_anything_after_startup(self):
        saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
        wakeup = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(wakeup)

        def restore():
            for number, handler in saved.items():
                signal.signal(number, handler)
            signal.set_wakeup_fd(wakeup)

        self.addCleanup(restore)
        reactor = SelectReactor()
        self.addCleanup(reactor.disconnectAll)
        seen = []
        reactor.callWhenRunning(lambda: seen.append(signal.getsignal(signal.SIGTERM)))  # queued first
        service = ExitCleanlyOnSignal(reactor)
        service.privilegedStartService()
        self.assertEqual(signal.getsignal(signal.SIGTERM), service._received)  # before a port listens
        service.startService()
        reactor.startRunning(installSignalHandlers=True)
        self.assertEqual(seen, [service._received])
        self.assertEqual(signal.getsignal(signal.SIGINT), service._received)

    def test_a_signal_while_the_reactors_handlers_are_in_place_meets_ours(self):
        """The race CI met once: SIGTERM in the moment between the reactor installing
        its handlers and ours going back in made twistd exit by the signal. Sent here
        from a startup trigger that runs in exactly that moment, in a process of its
        own: as in twistd, no thread runs before the signals are held (a test run's
        leftover threads would take the signal)."""
        done = subprocess.run(
            [sys.executable, "-c", HELD_SIGNAL],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.assertEqual(
            done.stdout.splitlines(), ["received SIGTERM: stopping", "mask restored"], done.stderr
        )

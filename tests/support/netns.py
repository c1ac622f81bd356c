"""A private network namespace for one test, and nftables rules that lose packets in it.

Network faults are tested for real: each test gets a Linux network namespace of
its own (``ip netns add``, loopback up), runs the server and its clients there
on 127.0.0.1, and has nftables drop packets inside it: a share of all of them
at random (:meth:`Namespace.lose`), or every packet of one connection
(:meth:`Namespace.blackhole`). Nothing outside the namespace is touched, and
a cleanup deletes it, also when the test fails.

**No subprocess for the test's sockets.** A network namespace belongs to a
thread, not to the process, and a socket stays in the namespace it was
created in, whatever thread uses it later. :meth:`Namespace.entered` switches
the calling thread (the reactor's) into the namespace with ``setns(2)`` and
back on leaving, even on an exception. Whatever creates its sockets
synchronously inside the block lives in the namespace: ``start_server`` (its
listening sockets are made in ``startService``) and ``connect``/
``reactor.connectTCP`` (the socket is made at once; the connection completes
later, on the reactor, still in the namespace). So::

    with namespace.entered():
        started = start_server(self)
        connected = connect(port, protocol)
    service, port = yield started  # yield only outside the block

Inside the block the reactor must not run: everything it would do there (other
tests' timers, Twisted's own sockets) would land in the namespace. Leaving a
block during which it ran raises. Threads started inside the block (the
server's thread pools start theirs in ``startService``) would inherit the
namespace; they are started back in the original one instead, so that no
thread keeps a deleted namespace alive (none of them makes sockets anyway).

It needs root, ``ip`` (iproute2) and ``nft`` (the Debian package nftables).
Where a namespace cannot be made the test is skipped, unless
``FAF_REPLAY_REQUIRE_NETNS=1`` (as CI sets): then it fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.support.requirements import unavailable

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
_CLONE_NEWNET = 0x40000000  # <sched.h>
_NETNS_DIRECTORY = Path("/run/netns")  # where `ip netns add` mounts a namespace
#: Our nftables table in the namespace; its one chain sees every packet that arrives.
TABLE = "faf_replay_test"
_RULESET = f"""\
table inet {TABLE} {{
    chain input {{
        type filter hook input priority filter; policy accept;
    }}
}}
"""
_numbers = itertools.count(1)


class Unavailable(Exception):
    """This machine cannot make a network namespace (no root, no ``ip``/``nft``, refused)."""


def namespace_for(test: TestCase) -> Namespace:
    """A fresh network namespace for ``test``, deleted after it.

    Skips ``test`` (or fails it, with ``FAF_REPLAY_REQUIRE_NETNS=1``) where this
    machine cannot make one.
    """
    try:
        namespace = Namespace.create()
    except Unavailable as error:
        unavailable("NETNS", f"no network namespace: {error}", "as root: apt-get install iproute2 nftables")
    test.addCleanup(namespace.delete)
    return namespace


def _tool(name: str, package: str) -> str:
    found = shutil.which(name, path=_SEARCH_PATH)
    if found is None:
        raise Unavailable(f"{name} is not installed (Debian package {package})")
    return found


def _run(*argv: str, stdin: str | None = None, error: type[Exception] = Unavailable) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise error(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace ``fd`` refers to."""
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"setns: {os.strerror(number)}")


def _namespace_of_thread(task: int | str) -> int | None:
    """The inode of a thread's network namespace, by its native id (None: the thread is gone)."""
    try:
        return os.stat(f"/proc/self/task/{task}/ns/net").st_ino
    except FileNotFoundError:
        return None


class Namespace:
    """One network namespace, ``faf-<pid>-<n>``, with loopback up and our nftables table."""

    def __init__(self, name: str, ip: str) -> None:
        self.name = name
        self._ip = ip
        self.path = _NETNS_DIRECTORY / name
        self.inode = self.path.stat().st_ino

    @classmethod
    def create(cls) -> Namespace:
        """Make one; raises :class:`Unavailable` when this machine cannot."""
        if os.geteuid() != 0:
            raise Unavailable("making a network namespace needs root")
        ip = _tool("ip", "iproute2")
        _tool("nft", "nftables")
        if not hasattr(_libc, "setns"):
            raise Unavailable("the C library has no setns()")
        if not os.path.exists("/proc/thread-self/ns/net"):
            raise Unavailable("/proc/thread-self/ns/net is missing")
        name = f"faf-{os.getpid()}-{next(_numbers)}"
        try:
            _run(ip, "netns", "add", name)
        except Unavailable as error:
            raise Unavailable(f"ip netns add refused: {error}") from None
        try:
            namespace = cls(name, ip)
            _run(ip, "-n", name, "link", "set", "lo", "up")
            namespace.nft(_RULESET, error=Unavailable)
        except BaseException:
            subprocess.run([ip, "netns", "delete", name], capture_output=True, timeout=30, check=False)
            raise
        return namespace

    # -- running inside -------------------------------------------------------

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread in the namespace for the block; back out after it, always."""
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        start_thread = threading.Thread.start

        def start_outside(thread: threading.Thread) -> None:
            # A new thread begins in its creator's namespace: it moves back
            # first thing, and start() returns once it has.
            fd = os.dup(original)  # its own: another thread may start it as the block ends
            run, moved = thread.run, threading.Event()

            def run_outside(*_: object) -> None:
                # (*_: a wrapper of Thread.run may pass the thread, as sentry_sdk's does.)
                try:
                    _setns(fd)
                finally:
                    os.close(fd)
                    moved.set()
                run()

            thread.run = run_outside  # type: ignore[method-assign]
            try:
                start_thread(thread)
            except BaseException:
                os.close(fd)
                raise
            moved.wait()

        reactor_ran: list[bool] = []
        witness = reactor.callLater(0, reactor_ran.append, True)
        try:
            target = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            threading.Thread.start = start_outside  # type: ignore[method-assign]
            try:
                yield
            finally:
                threading.Thread.start = start_thread  # type: ignore[method-assign]
                _setns(original)
        finally:
            os.close(original)
            if witness.active():
                witness.cancel()
        if reactor_ran:
            raise AssertionError(f"the reactor ran inside network namespace {self.name}: do not yield there")

    def threads_inside(self) -> list[str]:
        """This process's threads that are in the namespace now, as ``<name> (<id>)``."""
        inside = []
        for task in os.listdir("/proc/self/task"):
            if _namespace_of_thread(task) == self.inode:
                with contextlib.suppress(FileNotFoundError):
                    inside.append(f"{Path(f'/proc/self/task/{task}/comm').read_text().strip()} ({task})")
        return inside

    def exec(self, *argv: str, stdin: str | None = None, error: type[Exception] = RuntimeError) -> str:
        """Run a command inside the namespace (``ip netns exec``) and return its output."""
        return _run(self._ip, "netns", "exec", self.name, *argv, stdin=stdin, error=error)

    def open_sockets(self) -> list[str]:
        """TCP sockets in the namespace still held by a process (``ss`` lines)."""
        lines = self.exec("ss", "-Htanp").splitlines()
        return [line for line in lines if "users:(" in line]

    # -- nftables ---------------------------------------------------------------

    def nft(self, script: str, error: type[Exception] = RuntimeError) -> None:
        """Apply an nftables script (``nft -f -``) inside the namespace."""
        self.exec("nft", "-f", "-", stdin=script, error=error)

    def lose(self, percent: int) -> None:
        """Drop ``percent`` % of the packets arriving in the namespace, at random;
        ``counters()`` tells ``packets`` (all seen) and ``lost``."""
        self.nft(
            f'add rule inet {TABLE} input counter comment "packets"\n'
            f'add rule inet {TABLE} input numgen random mod 100 < {percent} counter drop comment "lost"\n'
        )

    def blackhole(self, client_port: int) -> None:
        """Drop every packet of the TCP connection from ``client_port``, both ways.

        On loopback every packet, whichever way it goes, arrives through the
        input hook once: the client's carry the port as source, the server's
        as destination. Counters ``to server <port>`` and ``to client <port>``.
        """
        port = client_port
        self.nft(
            f'add rule inet {TABLE} input tcp sport {port} counter drop comment "to server {port}"\n'
            f'add rule inet {TABLE} input tcp dport {port} counter drop comment "to client {port}"\n'
        )

    def clear(self) -> None:
        """Remove every rule: packets flow again."""
        self.nft(f"flush chain inet {TABLE} input\n")

    def counters(self) -> dict[str, int]:
        """Packets counted by each rule, by its comment."""
        listing = json.loads(self.exec("nft", "-j", "list", "chain", "inet", TABLE, "input"))
        counters = {}
        for item in listing["nftables"]:
            rule = item.get("rule")
            if rule is None:
                continue
            for expression in rule["expr"]:
                if "counter" in expression:
                    counters[rule.get("comment", str(rule["handle"]))] = expression["counter"]["packets"]
        return counters

    # -- the end ----------------------------------------------------------------

    def delete(self) -> None:
        """Kill what runs inside, then delete the namespace; fails the test if a
        thread or a socket of this process was still in it (both are let go)."""
        leftovers = []
        threads = self.threads_inside()
        if threads:
            leftovers.append(f"threads {threads}")
        if self.path.exists():
            sockets = self.open_sockets()
            if sockets:
                leftovers.append(f"open sockets {sockets}")
            self._kill_processes()
            _run(self._ip, "netns", "delete", self.name, error=RuntimeError)
        if leftovers:
            raise AssertionError(f"network namespace {self.name} still in use: {'; '.join(leftovers)}")

    def _kill_processes(self) -> None:
        """SIGKILL every process in the namespace (never this one) and wait until they are gone."""
        deadline = time.monotonic() + 10
        while True:
            listed = _run(self._ip, "netns", "pids", self.name, error=RuntimeError)
            pids = [int(pid) for pid in listed.split()]
            pids = [pid for pid in pids if pid != os.getpid()]
            if not pids:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"processes {pids} in network namespace {self.name} do not die")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

"""A real filesystem without hard links, mounted for one test: exFAT over FUSE.

The vault may live on a filesystem that refuses ``link()`` (CIFS/SMB shares,
FUSE mounts of object stores). exFAT has no hard links either, and Debian's
``exfat-fuse`` serves it from a file: ``mkfs.exfat`` on a sparse image, a loop
device for it (``mount.exfat-fuse`` always asks the kernel for ``fuseblk``,
which wants a block device, not a plain file), then ``mount.exfat-fuse``. Each
test gets its own image and mount; a cleanup unmounts, detaches and deletes
them, also when the test fails.

It needs root, ``/dev/fuse``, a loop device, and the Debian packages
``exfat-fuse`` and ``exfatprogs``. Without them the tests are skipped, unless
``FAF_REPLAY_REQUIRE_FUSE=1`` (as CI sets): then their absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.support.requirements import unavailable

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
#: Enough for a few replays and a spool; sparse, so it costs no disk.
IMAGE_BYTES = 64 * 1024 * 1024


class Unavailable(Exception):
    """This machine cannot mount the filesystem (a tool, a device or root is missing)."""


def _tool(name: str, package: str) -> str:
    found = shutil.which(name, path=_SEARCH_PATH)
    if found is None:
        raise Unavailable(f"{name} is not installed (Debian package {package})")
    return found


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise Unavailable(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def _mounted(directory: Path) -> bool:
    """Whether ``directory`` is a mount point now (read from /proc/mounts)."""
    with open("/proc/mounts", encoding="utf-8") as mounts:
        return any(line.split()[1] == str(directory) for line in mounts if line.strip())


def linkless_directory(test: TestCase) -> Path:
    """A fresh, empty exFAT filesystem mounted for ``test``; gone after it.

    Skips ``test`` (or fails it, with ``FAF_REPLAY_REQUIRE_FUSE=1``) where this
    machine cannot mount one.
    """
    try:
        return _mount(test)
    except Unavailable as error:
        why = f"no exFAT-over-FUSE filesystem to test on: {error}"
        unavailable("FUSE", why, "as root: apt-get install exfat-fuse exfatprogs")


def _mount(test: TestCase) -> Path:
    if os.geteuid() != 0:
        raise Unavailable("mounting needs root")
    if not os.path.exists("/dev/fuse"):
        raise Unavailable("/dev/fuse is missing (no fuse kernel module?)")
    mkfs = _tool("mkfs.exfat", "exfatprogs")
    mount = _tool("mount.exfat-fuse", "exfat-fuse")
    losetup = _tool("losetup", "mount")
    umount = _tool("umount", "mount")

    # A private folder under /tmp, not the test's own: its path stays short and
    # trial's temporary tree never holds a mount point.
    base = Path(tempfile.mkdtemp(prefix="faf-replay-exfat-"))
    test.addCleanup(shutil.rmtree, base, ignore_errors=True)
    image, directory = base / "image", base / "mnt"
    directory.mkdir()
    with open(image, "wb") as file:
        file.truncate(IMAGE_BYTES)
    _run(mkfs, str(image))
    device = _run(losetup, "--find", "--show", str(image))
    # Cleanups run last-added first: unmount, then detach the loop device.
    test.addCleanup(_run, losetup, "--detach", device)
    _run(mount, device, str(directory))
    test.addCleanup(_unmount, umount, directory)
    if not _mounted(directory):
        raise Unavailable(f"{directory} is not a mount point after mount.exfat-fuse")
    return directory


def _unmount(umount: str, directory: Path) -> None:
    """Unmount; a busy mount is detached lazily (nothing is left in /proc/mounts)
    and the test fails, since something still held a file open there."""
    done = subprocess.run([umount, str(directory)], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode == 0 and not _mounted(directory):
        return
    subprocess.run([umount, "--lazy", str(directory)], capture_output=True, timeout=60, check=False)
    raise AssertionError(f"{directory} could not be unmounted cleanly: {done.stderr.strip()}")

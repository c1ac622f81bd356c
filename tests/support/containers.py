"""The project's image, built and run with podman for the tests.

No registry of images is reachable here, so the Debian base that
``deploy/Dockerfile`` starts from (``debian:bookworm-slim``) is made locally
with ``mmdebstrap`` from Debian's packages, kept in podman's store and remade
after a month. The Dockerfile is built as it is, with ``--build-arg BASE=``.
Containers run on the host's network, on ports the test picks.

Where podman, mmdebstrap or root are missing the tests are skipped, unless
``FAF_REPLAY_REQUIRE_IMAGE=1`` (as CI sets): then their absence is a failure.

What this machine's sandbox needs, and why (each is harmless elsewhere):

- ``--runtime runc`` where cgroups are hybrid (v1 controllers, with one on the
  v2 hierarchy): crun refuses such a host ("cgroups in hybrid mode not
  supported"), runc does not.
- ``--ulimit`` at the process's own hard limits: podman asks for more open
  files and processes than the hard limits by default, and raising a hard limit
  needs CAP_SYS_RESOURCE, which a container of a sandbox may lack (crun and
  runc then fail with EPERM from prlimit64).
- the host's CA bundle and a ``/etc/pip.conf`` naming it, in the base: pip in
  the build then trusts what this machine trusts (a TLS-inspecting proxy).
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.paths import REPOSITORY
from tests.support.requirements import unavailable

ROOT = REPOSITORY
BASE = "localhost/faf-replay-test-base:bookworm"
IMAGE = "localhost/faf-replay-test:latest"
#: A base older than this is made again (Debian's updates).
BASE_MAX_AGE = 30 * 24 * 3600
HOST_CA = "/usr/local/share/host-ca/ca-certificates.crt"


class ContainerError(RuntimeError):
    pass


def _hybrid_cgroups() -> bool:
    controllers = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    try:
        return bool(controllers.read_text().split())
    except OSError:
        return False


def missing() -> str | None:
    """Why the image cannot be built and run here, or None."""
    if os.geteuid() != 0:
        return "building the image needs root (rootful podman, mmdebstrap in root mode)"
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {tool})"
    if _hybrid_cgroups() and shutil.which("runc") is None:
        return "cgroups are hybrid here, which crun refuses: install runc (Debian package runc)"
    return None


def require() -> None:
    """Skip the calling test where images cannot be made (fail, under CI)."""
    reason = missing()
    if reason is None:
        return
    unavailable("IMAGE", reason)


def podman(*args: str) -> list[str]:
    """A podman command line with this machine's runtime."""
    runtime = ["--runtime", "runc"] if _hybrid_cgroups() else []
    return ["podman", *runtime, *args]


def limits() -> list[str]:
    """``--ulimit`` options at this process's hard limits (see the module's docstring)."""
    options = []
    for name, which, cap in (
        ("nofile", resource.RLIMIT_NOFILE, 1 << 20),
        ("nproc", resource.RLIMIT_NPROC, 32768),
    ):
        hard = resource.getrlimit(which)[1]
        value = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        options += ["--ulimit", f"{name}={value}:{value}"]
    return options


def run(*args: str, timeout: float = 60, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run ``podman *args``; a failure says what podman printed."""
    command = podman(*args)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and result.returncode != 0:
        raise ContainerError(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


def _base_is_fresh() -> bool:
    found = run("image", "inspect", "--format", "{{.Created.Unix}}", BASE, check=False)
    return found.returncode == 0 and time.time() - int(found.stdout.strip()) < BASE_MAX_AGE


def _host_ca_bundle() -> str | None:
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def make_base() -> None:
    """Debian bookworm, minbase, merged /usr, without documentation, as in
    ``debian:bookworm-slim``; imported into podman's store as BASE."""
    hooks = []
    bundle = _host_ca_bundle()
    if bundle is not None:
        folder = os.path.dirname(HOST_CA)
        hooks.append(
            f'mkdir -p "$1{folder}" && cp {shlex.quote(bundle)} "$1{HOST_CA}"'
            f' && printf "[global]\\ncert = {HOST_CA}\\n" > "$1/etc/pip.conf"'
        )
    excluded = ["/usr/share/man/*", "/usr/share/info/*", "/usr/share/doc/*", "/usr/share/locale/*"]
    command = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--format=tar",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        *(f"--dpkgopt=path-exclude={path}" for path in excluded),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        *(f"--customize-hook={hook}" for hook in hooks),
        "bookworm",
        "-",
    ]
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors) as debootstrap,
    ):
        assert debootstrap.stdout is not None
        imported = subprocess.run(
            podman("import", "--change", 'CMD ["bash"]', "-", BASE),
            stdin=debootstrap.stdout,
            capture_output=True,
            timeout=600,
            check=False,
        )
        debootstrap.stdout.close()
        debootstrap.wait(timeout=60)
        errors.seek(0)
        said = errors.read().decode(errors="replace")
    if debootstrap.returncode != 0 or imported.returncode != 0:
        raise ContainerError(f"making the base failed: {said[-3000:]}{imported.stderr.decode()[-2000:]}")


_built: str | ContainerError | None = None


def image() -> str:
    """The image of deploy/Dockerfile from this working tree, built once per test
    run (podman's layer cache makes a rebuild of an unchanged tree quick); a
    failed build fails every test that needs the image, at once."""
    global _built
    if _built is None:
        try:
            _built = _build()
        except (ContainerError, subprocess.TimeoutExpired) as error:
            _built = ContainerError(str(error))
    if isinstance(_built, ContainerError):
        raise _built
    return _built


def _build() -> str:
    if not _base_is_fresh():
        make_base()
    before = run("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    build = run(
        "build",
        "--network=host",
        "--pull=never",
        *limits(),
        "--build-arg",
        f"BASE={BASE}",
        "--file",
        str(ROOT / "deploy" / "Dockerfile"),
        "--tag",
        IMAGE,
        str(ROOT),
        timeout=900,
        check=False,
    )
    if build.returncode != 0:
        raise ContainerError(f"podman build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}")
    if before and before != run("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip():
        # The previous build's image and its own layers: each change of the code
        # would otherwise leave a few hundred megabytes behind.
        run("rmi", before, check=False)
    return IMAGE


def inspect(name: str, what: str = "image") -> dict[str, Any]:
    return json.loads(run(what, "inspect", name).stdout)[0]


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now, all different (held open together while picked)."""
    sockets = []
    try:
        for _ in range(count):
            listener = socket.socket()
            listener.bind(("0.0.0.0", 0))
            sockets.append(listener)
        return [listener.getsockname()[1] for listener in sockets]
    finally:
        for listener in sockets:
            listener.close()

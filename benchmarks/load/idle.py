"""The idle scenario: memory per connection that sends nothing."""

from __future__ import annotations

import os
import resource
import socket
import time

from benchmarks.load.server import Server, new_workdir


def idle(args) -> dict:
    workdir = new_workdir()
    server = Server(workdir, [])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    time.sleep(1)
    before, _ = server.memory()
    socks = [socket.create_connection(("127.0.0.1", server.game_port)) for _ in range(args.connections)]
    held = 'replayserver_active_connections_count{category="initial"}'
    deadline = time.time() + 60
    while server.metric(held) < args.connections and time.time() < deadline:
        time.sleep(0.5)  # accepted by the server, not only by the kernel
    time.sleep(1)
    after, _ = server.memory()
    accepted = int(server.metric(held))
    for sock in socks:
        sock.close()
    server.stop()
    return {
        "machine_cpus": os.cpu_count(),
        "idle_connections": args.connections,
        "held_by_server": accepted,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "kib_per_idle_connection": round((after - before) / args.connections / 1024, 2),
    }

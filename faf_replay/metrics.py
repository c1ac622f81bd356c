"""Prometheus metrics, named as the Rust server named them so FAF's dashboards
keep working, plus ours. Label values are a small fixed set."""

from __future__ import annotations

import sys

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from faf_replay.server.c_allocator import c_allocator

active_connections = Gauge(
    "replayserver_active_connections_count",
    "Count of currently active connections.",
    ["category"],  # initial, writer, reader
)
served_connections = Counter(
    "replayserver_served_connections_total",
    "How many connections we served to completion.",
    ["result"],
)
running_replays = Gauge("replayserver_running_replays_count", "Count of currently running replays.")
finished_replays = Counter("replayserver_finished_replays", "Number of replays ran to completion.")
tick_errors = Counter(
    "replayserver_tick_errors",
    "Game ticks that raised (an unreadable spool file, a bug); the game is tried again next tick.",
)
saved_replays = Counter("replayserver_saved_replay_files", "Total replays successfully saved to disk.")

rejected_connections = Counter(
    "replayserver_rejected_connections",
    "Connections closed because of what they sent (or did not send), by reason.",
    ["reason"],
)
received_bytes = Counter("replayserver_received_bytes", "Replay bytes received from uploaders.")
sent_bytes = Counter("replayserver_sent_bytes", "Replay bytes sent to watchers.")
diverged_uploads = Counter("replayserver_diverged_uploads", "Uploads dropped for disagreeing with the merge.")
stalled_uploads = Counter(
    "replayserver_stalled_uploads", "Uploads that stopped counting as voters after a stall."
)
save_failures = Counter(
    "replayserver_save_failures", "Replays that could not be saved, by reason.", ["reason"]
)
save_seconds = Histogram(
    "replayserver_save_duration_seconds",
    "From the end of a game's write phase to its file in the vault.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Results of replayserver_served_connections_total, as the Rust server labels them.
SUCCESS = "Success"
EMPTY = "Empty connection"
BAD_DATA = "Bad data"
NO_REPLAY = "No replay matched"

# The labelled series every connection touches, looked up once: ``labels()``
# takes a lock and builds a key each time, a third of what it costs us to
# accept a watcher.
active = {category: active_connections.labels(category) for category in ("initial", "writer", "reader")}
#: Watchers served, by where their replay came from: a live game, or the vault after its end.
watchers_served = Counter(
    "replayserver_watchers", "Watchers served, by where the replay came from.", ["source"]
)
served = {result: served_connections.labels(result) for result in (SUCCESS, EMPTY, BAD_DATA, NO_REPLAY)}
database_errors = Counter(
    "replayserver_database_errors", "Database operations that failed, by operation.", ["operation"]
)
spool_errors = Counter("replayserver_spool_errors", "Uploads the spool could not keep on disk.")
recovered_replays = Counter("replayserver_recovered_replays", "Games brought back from the spool at startup.")
outbox_entries = Gauge("replayserver_outbox_entries", "Saved replays whose database bookkeeping is pending.")
watchers_per_replay = Histogram(
    "replayserver_watchers_per_replay",
    "Most watchers a replay had at once, observed when it is done.",
    buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
reactor_lag = Histogram(
    "replayserver_reactor_lag_seconds",
    "How late the reactor ran a timer that should have run at once (a stall of the event loop).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
reactor_lag_max = Gauge("replayserver_reactor_lag_max_seconds", "The longest reactor stall since the start.")
vault_refuses_hard_links = Gauge(
    "replayserver_vault_refuses_hard_links",
    "1 once the vault's filesystem refused a hard link (CIFS, exFAT, some FUSE mounts): replays are "
    "then claimed (an empty file) and renamed into place instead of linked.",
)
vault_writable = Gauge(
    "replayserver_vault_writable",
    "1 when the last check (at startup, then at every /health) could create a file in the vault.",
)
vault_read_errors = Counter(
    "replayserver_vault_read_errors",
    "Looks into the vault that failed (a saved replay read for a watcher, or whether the vault holds "
    "a game an upload would start): the watcher is refused, the upload let in.",
)
lost_connections = Counter(
    "replayserver_lost_connections",
    "Connections that ended without a clean close, by category (writer, reader; initial: a WebSocket "
    "before its header) and verdict: 'no answer' (silent until TCP keepalive gave up: the peer "
    "vanished), 'reset', 'no pong' (a WebSocket ping unanswered: the peer vanished), 'protocol "
    "error' (a WebSocket that broke the protocol) or 'error code' (a WebSocket closed with another "
    "error code).",
    ["category", "verdict"],
)
silent_uploads = Counter(
    "replayserver_silent_uploads",
    "Uploads that stopped holding their game open: silent for silent_upload_timeout after every other left.",
)
stalled_watchers = Counter(
    "replayserver_stalled_watchers",
    "Watchers closed for acknowledging nothing for watcher_stall_timeout while their socket stayed full.",
)
metadata_errors = Counter(
    "replayserver_metadata_errors",
    "Saves that could not read something of the replay itself (its header, its ticks): neutral values saved.",
)
quarantined_replays = Counter(
    "replayserver_quarantined_replays",
    "Games whose save failed by their data three times: their uploads moved to the spool's quarantine.",
)
python_allocated_blocks = Gauge(
    "replayserver_python_allocated_blocks",
    "Memory blocks the Python allocator holds now (sys.getallocatedblocks). Unlike the resident "
    "memory, which keeps its high-water mark, this falls when objects are freed: a leak is this "
    "rising while the load stays the same.",
)
python_allocated_blocks.set_function(sys.getallocatedblocks)


class _CAllocatorCollector(Collector):
    """The C allocator's bytes in use and free, both from one ``mallinfo2`` per scrape (it
    walks the heaps' free lists)."""

    _HELP = {
        "in_use": (
            "replayserver_c_allocator_in_use_bytes",
            "Bytes the C allocator (glibc malloc) holds for live allocations, Python's big objects "
            "and C libraries' alike. A leak is this rising while the load stays the same; NaN "
            "without glibc.",
        ),
        "free": (
            "replayserver_c_allocator_free_bytes",
            "Bytes free inside the C allocator's heaps: still mapped, mostly resident. "
            "Fragmentation is this rising while the in-use bytes do not; NaN without glibc.",
        ),
    }

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, help_text) for name, help_text in self._HELP.values()]

    def collect(self) -> list[GaugeMetricFamily]:
        held = c_allocator()
        return [
            GaugeMetricFamily(name, help_text, value=float("nan") if held is None else getattr(held, field))
            for field, (name, help_text) in self._HELP.items()
        ]


REGISTRY.register(_CAllocatorCollector())

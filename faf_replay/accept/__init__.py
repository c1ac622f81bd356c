"""Where a connection comes in: TCP, WebSocket or behind a proxy, its limits and
keepalive, its connection header (``P/…`` or ``G/…``), and the switch to an upload
or a watcher (``replay_protocol.py``)."""

"""A real server: a ``twistd faf-replay`` process, or the whole service on real
sockets, with real recordings, MariaDB, network faults, the image."""

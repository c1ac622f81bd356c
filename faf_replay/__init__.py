"""faf-replay: the live replay server of Forged Alliance Forever.

The data flow, module by module::

    protocol (connection header) ─┬─ upload   → stream → game (merge, delay) → saving → vault
                                  └─ download ← game
    registry: every game by id; server_tap: the command line and the services.
"""

__version__ = "0.1.0"

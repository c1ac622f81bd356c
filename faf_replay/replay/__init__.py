"""A live replay: uploads come in (``upload.py``, read at the tick), the game
merges them and lets watchers have them after the delay (``game.py``, ``merge.py``,
``delay.py``, ``waiting.py``), watchers get them (``download.py``); the registry
holds every game."""

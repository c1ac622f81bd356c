"""The load benchmark: real games against a real ``twistd faf-replay``.

    .venv/bin/python -m benchmarks.load cost [--mariadb]    # 400 games x (4 up + 2 watch) of 300 KB at 5 KB/s
    .venv/bin/python -m benchmarks.load capacity --games 2400 --ramp 30 [--plot out.png]
    .venv/bin/python -m benchmarks.load capacity --games 1450 --uploaders 8 --acceleration 1 --ramp 45
    .venv/bin/python -m benchmarks.load idle --connections 10000
    .venv/bin/python -m benchmarks.load watchers [--watchers 200 --size 5600000 --zstd-level 19]
    .venv/bin/python -m benchmarks.load cost --server floor          # or floor-every-write, or anchor
    .venv/bin/python -m benchmarks.load cost --compare --anchor-path /work/anchors/aio

docs/benchmarks.md has the figures measured with these commands, and the machine.

``--server`` loads another server with the same games: the floor
(``benchmarks/floor.py``, what any server must spend on these sockets) or the
asyncio anchor (``benchmarks/anchor.py``). ``--compare`` runs them in turn in
one invocation and ends with a table of ratios (``benchmarks/compare.py``).

Starts the server (this checkout) as a subprocess on free ports, and drives it
over real TCP from several load-generator processes, each a plain
``selectors`` loop over many non-blocking sockets (cheap enough to share the
machine with the server). Uploads are real recordings from ``tests/data``
(the body repeated to the length asked), written ten times a second at a fixed
byte rate or paced by the replay's own ticks; some uploaders diverge or leave
early; some watchers join late. Every saved file is read back with
``fafreplay.extract_scfa`` and every watcher's bytes are checked. Prints a
readable table and, last, one line of JSON. Figures: server CPU (user+sys from
``/proc``) per phase, peak and steady resident memory, memory per connection,
bytes in and out, connections held, replays saved and verified, time from a
game's last upload to its saved file (median, p99), the longest reactor stall
(the server's own probe), and the generators' CPU.

The package: ``plans`` (what the load is), ``streams``, ``generator``, ``server``, ``rows``,
``verify``, ``report``, and one module per scenario (``capacity``, ``idle``, ``crowd``).
"""

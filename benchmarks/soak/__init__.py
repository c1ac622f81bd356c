"""The chaos soak: an evening of FAF under faults, checked byte for byte.

    sudo .venv/bin/python -m benchmarks.soak --minutes 60 --seed 7 [--plot soak.svg] [--report soak.json]
    sudo .venv/bin/python -m benchmarks.soak --minutes 2 --seed 1 --games 40 --compression 40   # CI's

A real ``twistd faf-replay`` with a MariaDB of its own, in a private network namespace (root,
``ip``, ``nft``), its spool and vault each on a small tmpfs of their own. Games arrive at
random to keep ``--games`` running: 1v1 to 8 players streaming real recordings from
``tests/data`` paced by their ticks, time compressed ``--compression`` times (the server's game
timers divided alike); watchers join early, late (after the end) or slow, some leave; a third
of the connections over WebSocket; a trickle of the fuzz suite's hostile cases. On a schedule
drawn from the seed: kill -9 and restart on the same spool, SIGTERM and restart (a deploy),
MariaDB killed and restarted or hung (SIGSTOP), the spool's or the vault's filesystem full
for a while, 1-5 % of the game ports' packets lost throughout, players that vanish without a
FIN; and storms, several at once. Then everything drains and every game is checked
(``checks.py``), and the server's memory, descriptors, threads, spool size and reactor lag are
judged flat or not (``flat.py``). Exits 0 when nothing was lost and nothing was wrong.

``plan`` (the seeded plan), ``stack`` (the processes, disks and nftables), ``players`` (the
clients), ``faults`` (doing the faults; what was durable), ``run`` (one run on the reactor),
``checks``, ``flat``, ``report``. docs/benchmarks.md, "Chaos soak", has the figures.
"""

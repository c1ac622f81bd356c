"""Put a quarantined game into the vault by hand.

    python -m faf_replay.tools.unquarantine <spool>/quarantine/<id>-<time> --vault /data/replays

The server moves a game whose save failed by its data (three times) to
``<spool>/quarantine/`` (``game.py``, ``spool.py``). Once an operator has looked
at it, this writes it into the vault as the server would: the longest upload
(or ``--upload N``), exactly as it arrived, with what the replay itself tells
as metadata (neutral values where it cannot be read), never over an existing
replay. No Twisted here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faf_replay.replay.replay_header import ReplayHeaderScanner
from faf_replay.save.best_effort import guarded
from faf_replay.save.metadata import login_from_name, standalone_metadata
from faf_replay.save.vault import write_replay


def uploads(folder: Path) -> dict[int, tuple[str, bytes]]:
    """Each upload of the folder: its number, its uploader's name and its stream."""
    found = {}
    for path in folder.glob("*.upload"):
        if path.stem.isdigit():
            name, _, stream = path.read_bytes().partition(b"\0")
            found[int(path.stem)] = (name.decode("utf-8", "replace"), stream)
    return found


def header_of(stream: bytes) -> bytes:
    """The replay header at the start of ``stream``, as the server finds it (all of it if none)."""
    scanner = ReplayHeaderScanner()
    length, _ = guarded(scanner.feed, stream)
    return stream[:length] if isinstance(length, int) else stream


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the game's folder in <spool>/quarantine/")
    parser.add_argument("--vault", required=True, help="the vault the server saves into")
    parser.add_argument("--upload", type=int, help="which upload (its number); default: the longest")
    parser.add_argument("--zstd-level", type=int, default=10)
    args = parser.parse_args(argv)
    record = json.loads((args.folder / "record.json").read_text(encoding="utf-8"))
    game_id = int(record["game_id"])
    found = uploads(args.folder)
    if not found:
        print(f"{args.folder}: no upload to save", file=sys.stderr)
        return 1
    number = args.upload if args.upload is not None else max(found, key=lambda n: len(found[n][1]))
    name, stream = found[number]
    started = float(record.get("started_at", 0))
    metadata = standalone_metadata(
        game_id,
        header_of(stream),
        recorder=login_from_name(name),
        launched_at=started,
        game_end=(args.folder / f"{number}.upload").stat().st_mtime,
    )
    saved = write_replay(args.vault, game_id, metadata, stream, args.zstd_level)
    print(f"game {game_id}: saved {saved.path} ({saved.size} bytes) from upload {number} ({name!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

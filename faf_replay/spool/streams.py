"""A new upload's stream, on disk as it arrives when its game has a spool."""

from __future__ import annotations

from twisted.logger import Logger

from faf_replay import metrics
from faf_replay.replay.stream import RawStore, UploadStream
from faf_replay.spool.spool import GameSpool

log = Logger()


def spooled_stream(game_id: int, name: str, spool: GameSpool | None, interval: float) -> UploadStream:
    """A stream for upload ``name``: spooled through ``spool``'s writer every
    ``interval`` seconds, or in memory only when there is no spool (or while the
    disk refuses, which is logged and counted, until it takes the upload again)."""
    if spool is None:
        return UploadStream(name)

    def failed(error: OSError) -> None:
        metrics.spool_errors.inc()
        log.error(
            "game {game_id}: cannot spool upload {name!r} ({why}); keeping it in memory",
            game_id=game_id,
            name=name,
            why=str(error),
        )

    def resumed(size: int) -> None:
        log.info(
            "game {game_id}: spooling upload {name!r} again ({size} bytes on disk)",
            game_id=game_id,
            name=name,
            size=size,
        )

    store = RawStore(
        spool.new_upload(name),
        spool.spool.write,
        on_error=failed,
        interval=interval,
        resume=spool.spool.resume,
        on_resumed=resumed,
    )
    return UploadStream(name, store)

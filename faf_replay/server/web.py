"""The HTTP side (``--http-port``): metrics, health and the live-games API.

* ``/metrics``: Prometheus text format (``prometheus-client``).
* ``/health``: 200 when every listener listens and the vault takes a file,
  503 otherwise; the JSON body says which, and the database's state.
* ``/games``: the running replays as JSON; ``/games/<id>`` one of them (404).
* ``/``: the metrics again for a scraper (FAF scrapes ``/``, as the Rust
  server served it), and for a browser a small HTML page of the live games.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from prometheus_client.twisted import MetricsResource
from twisted.web.resource import IResource, NoResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from faf_replay import metrics
from faf_replay.save.vault import vault_refusal
from faf_replay.server.listening import is_listening

if TYPE_CHECKING:
    from faf_replay.server.services import FafReplayService


def web_site(service: FafReplayService, clock: Any) -> Site:
    metrics = MetricsResource()
    root = GamesPage(service, clock, metrics)
    root.putChild(b"", root)
    root.putChild(b"metrics", metrics)
    root.putChild(b"health", Health(service, clock))
    root.putChild(b"games", Games(service, clock))
    return Site(root)


def _json(request: Request, value: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def live_games(service: FafReplayService, now: float) -> list[dict[str, object]]:
    games = sorted(service.registry.games.values(), key=lambda game: game.game_id)
    return [game.status(now) for game in games]


class Games(Resource):
    """``GET /games`` and ``GET /games/<id>``."""

    def __init__(self, service: FafReplayService, clock: Any) -> None:
        super().__init__()
        self._service = service
        self._clock = clock

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        if not path.isdigit():
            return NoResource("no such game")
        game = self._service.registry.games.get(int(path))
        if game is None:
            return NoResource("no live replay of this game")
        return _Static(game.status(self._clock.seconds()))

    def render_GET(self, request: Request) -> bytes:
        return _json(request, live_games(self._service, self._clock.seconds()))


class _Static(Resource):
    isLeaf = True

    def __init__(self, value: Any) -> None:
        super().__init__()
        self._value = value

    def render_GET(self, request: Request) -> bytes:
        return _json(request, self._value)


class Health(Resource):
    isLeaf = True

    def __init__(self, service: FafReplayService, clock: Any) -> None:
        super().__init__()
        self._service = service
        self._clock = clock

    def render_GET(self, request: Request) -> Any:
        service = self._service
        listening = {name: is_listening(listener) for name, listener in service.listeners.items()}
        monitor = service.database
        database = (
            "off" if monitor is None else {True: "up", False: "down", None: "unknown"}[monitor.reachable]
        )
        vault = service.registry.settings.vault

        def answer(writable: bool) -> None:
            healthy = all(listening.values()) and writable
            body = {
                "status": "ok" if healthy else "failing",
                "listening": listening,
                "vault_writable": writable,
                "database": database,
                "running_replays": len(service.registry.games),
            }
            request.write(_json(request, body, 200 if healthy else 503))
            request.finish()

        d = service.workers.run(_vault_writable, vault)
        d.addCallback(answer)
        return NOT_DONE_YET


def _vault_writable(vault: str) -> bool:
    writable = vault_refusal(vault) is None
    metrics.vault_writable.set(writable)
    return writable


def wants_metrics(accept: bytes | None) -> bool:
    """Whether a request of ``/`` comes from a scraper: it sends no ``Accept``
    (FAF's scrape path is ``/``), or names Prometheus' text formats before
    HTML, as Prometheus and VictoriaMetrics do; a browser names HTML first."""
    if not accept:
        return True
    for item in accept.split(b","):
        media = item.split(b";", 1)[0].strip().lower()
        if media in (b"text/plain", b"application/openmetrics-text"):
            return True
        if media == b"text/html":
            return False
    return False


class GamesPage(Resource):
    """``GET /``: the live games as an HTML table, refreshed every few seconds;
    the metrics when a scraper asks."""

    def __init__(self, service: FafReplayService, clock: Any, metrics: IResource) -> None:
        super().__init__()
        self._service = service
        self._clock = clock
        self._metrics = metrics

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self if path == b"" else NoResource()

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"vary", b"accept")
        if wants_metrics(request.getHeader(b"accept")):
            return self._metrics.render(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        games = live_games(self._service, self._clock.seconds())
        rows = "\n".join(_row(game) for game in games) or (
            '<tr><td colspan="6" class="none">No game is running.</td></tr>'
        )
        return _PAGE.format(count=len(games), rows=rows).encode("utf-8")


def _duration(value: float) -> str:
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


def _row(game: dict[str, Any]) -> str:
    watchable = "now" if game["watchable_in"] == 0 else f"in {_duration(game['watchable_in'])}"
    state = "ending" if game["ending"] else "live"
    cells = [
        str(game["game_id"]),
        str(game["uploaders"]),
        str(game["watchers"]),
        _duration(game["seconds_since_start"]),
        watchable,
        state,
    ]
    return (
        f'<tr data-game="{game["game_id"]}">'
        + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
        + "</tr>"
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>faf-replay: live games</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: right; }}
th {{ background: #f3f3f3; }}
td.none {{ text-align: center; color: #777; }}
</style>
</head>
<body>
<h1>Live games</h1>
<p id="count">{count} running</p>
<table id="games">
<thead><tr><th>Game</th><th>Uploaders</th><th>Watchers</th><th>Running for</th>
<th>Watchable</th><th>State</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<p>JSON: <a href="/games">/games</a>, metrics: <a href="/metrics">/metrics</a>,
health: <a href="/health">/health</a></p>
</body>
</html>
"""

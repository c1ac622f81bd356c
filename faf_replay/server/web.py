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
from faf_replay.replay.game_status import ended_status
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
    """The live games, then the games that ended in the last hour (``state`` "ended")."""
    registry = service.registry
    games = sorted(registry.games.values(), key=lambda game: game.game_id)
    ended = sorted(registry.recently_ended().items())
    return [game.status(now, registry.from_vault) for game in games] + [
        ended_status(game_id, at, now, registry.from_vault, registry.vault_hold(game_id))
        for game_id, at in ended
    ]


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
        registry, game_id, now = self._service.registry, int(path), self._clock.seconds()
        game = registry.games.get(game_id)
        if game is not None:
            return _Static(game.status(now, registry.from_vault))
        ended = registry.recently_ended().get(game_id)
        if ended is None:
            return NoResource("no live replay of this game")
        return _Static(ended_status(game_id, ended, now, registry.from_vault, registry.vault_hold(game_id)))

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
        live = [game for game in games if game["state"] != "ended"]
        rows = "\n".join(_row(game) for game in live) or (
            '<tr><td colspan="10" class="none">No game is running.</td></tr>'
        )
        ended = "\n".join(_ended_row(game) for game in games if game["state"] == "ended") or (
            '<tr><td colspan="3" class="none">No game ended in the last hour.</td></tr>'
        )
        return _PAGE.format(count=len(live), rows=rows, ended=ended).encode("utf-8")


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
    players = ", ".join(f"{p['name']} (team {p['team']}, {p['faction']})" for p in game["players"])
    cells = [
        html.escape(str(game["game_id"])),
        html.escape(game["map"] or "?"),
        html.escape(players or "?"),
        html.escape(_duration(game["ticks"] / 10)),  # ten ticks a second
        html.escape(str(game["uploaders"])),
        html.escape(str(game["watchers"])),
        html.escape(_duration(game["seconds_since_start"])),
        html.escape(watchable),
        _sparkline(game["stream_rate"]),
        html.escape(state),
    ]
    return f'<tr data-game="{game["game_id"]}">' + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _sparkline(rates: list[float], width: int = 120, height: int = 24) -> str:
    """The stream's rate over the last minutes as a small plot (an inline SVG)."""
    top = max(rates, default=0) or 1
    step = width / max(len(rates) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{height - rate / top * (height - 2) - 1:.1f}" for i, rate in enumerate(rates)
    )
    title = f"up to {max(rates, default=0) / 1000:.1f} KB/s over the last {len(rates) * 10 // 60} min"
    return (
        f'<svg class="rate" width="{width}" height="{height}" role="img" aria-label="{title}">'
        f"<title>{title}</title>"
        f'<polyline fill="none" stroke="#3572b0" stroke-width="1.5" points="{points}"/></svg>'
    )


def _ended_row(game: dict[str, Any]) -> str:
    if game["watchable_from_vault"]:
        watchable = "from the vault"
    elif game["watchable_in"]:
        watchable = f"from the vault in {_duration(game['watchable_in'])}"
    else:
        watchable = "no"
    cells = [str(game["game_id"]), f"{_duration(game['seconds_since_end'])} ago", watchable]
    return (
        f'<tr data-ended="{game["game_id"]}">'
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
<thead><tr><th>Game</th><th>Map</th><th>Players</th><th>Game time</th><th>Uploaders</th>
<th>Watchers</th><th>Running for</th><th>Watchable</th><th>Stream</th><th>State</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<h2>Ended in the last hour</h2>
<table id="ended">
<thead><tr><th>Game</th><th>Ended</th><th>Watchable</th></tr></thead>
<tbody>
{ended}
</tbody>
</table>
<p>JSON: <a href="/games">/games</a>, metrics: <a href="/metrics">/metrics</a>,
health: <a href="/health">/health</a></p>
</body>
</html>
"""

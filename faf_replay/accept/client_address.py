"""Who a connection really comes from, when proxies stand in front of us.

FAF runs the server behind Traefik, and its WebSocket host behind Cloudflare
as well: every TCP connection reaches us from Traefik's own address, and a
WebSocket's client is named only in its headers (``X-Forwarded-For``,
``X-Real-IP``, Cloudflare's ``CF-Connecting-IP``). :class:`TrustedProxies`
says whose word we take for the client's address (those headers, or a PROXY
protocol header: ``proxy_header.py``); a trusted proxy's own address speaks for
many clients, so the per-address limit does not apply to it. Pure logic, no
Twisted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: ``private``: the networks a proxy of one's own sits in, never a player's
#: public address: loopback, RFC 1918, link-local, unique-local IPv6, and the
#: carrier-grade NAT range some clusters give their pods.
PRIVATE = tuple(
    ipaddress.ip_network(network)
    for network in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


#: ``cloudflare``: the address ranges Cloudflare publishes for its edge
#: (https://www.cloudflare.com/ips-v4 and /ips-v6), as of :data:`CLOUDFLARE_AS_OF`.
#: They change rarely; ``cloudflare_ranges_file`` replaces them when they do.
CLOUDFLARE_AS_OF = "2026-09-29"
CLOUDFLARE = tuple(
    ipaddress.ip_network(network)
    for network in (
        "173.245.48.0/20",
        "103.21.244.0/22",
        "103.22.200.0/22",
        "103.31.4.0/22",
        "141.101.64.0/18",
        "108.162.192.0/18",
        "190.93.240.0/20",
        "188.114.96.0/20",
        "197.234.240.0/22",
        "198.41.128.0/17",
        "162.158.0.0/15",
        "104.16.0.0/13",
        "104.24.0.0/14",
        "172.64.0.0/13",
        "131.0.72.0/22",
        "2400:cb00::/32",
        "2606:4700::/32",
        "2803:f800::/32",
        "2405:b500::/32",
        "2405:8100::/32",
        "2a06:98c0::/29",
        "2c0f:f248::/32",
    )
)


class TrustedProxiesError(ValueError):
    pass


def read_ranges(text: str, origin: str) -> tuple[Network, ...]:
    """Networks one per line, as Cloudflare publishes them (``#`` starts a
    comment); ``origin`` names the file in the error."""
    networks: list[Network] = []
    for number, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise TrustedProxiesError(f"{origin}, line {number}: {item!r} is not a network") from None
    if not networks:
        raise TrustedProxiesError(f"{origin} holds no network")
    return tuple(networks)


class TrustedProxies:
    """Whose word on a client's address we take, from ``trusted_proxies``:
    comma-separated addresses or networks (``10.0.0.0/8``, ``2001:db8::1``),
    ``private`` for :data:`PRIVATE`, ``cloudflare`` for Cloudflare's edge,
    ``none`` for nobody.

    Two kinds, trusted for different things. ``networks`` are proxies of
    ours (Traefik): their PROXY headers and forwarding headers are believed,
    and their own addresses have no per-address limit. ``edges`` are
    Cloudflare's: a hop in the forwarding headers that is an edge is read
    past, and its ``CF-Connecting-IP`` names the client; but anyone can run
    code there (a Cloudflare Worker), so an edge's own address is limited like
    any client's and its PROXY headers mean nothing."""

    def __init__(self, networks: Iterable[Network] = (), edges: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)
        self.edges = tuple(edges)
        # One verdict per address: a proxy's address comes back on every connection.
        self.trusts = lru_cache(maxsize=4096)(self._trusts)
        self.is_edge = lru_cache(maxsize=4096)(self._is_edge)

    @classmethod
    def parse(cls, text: str, cloudflare: Iterable[Network] = CLOUDFLARE) -> TrustedProxies:
        networks: list[Network] = []
        edges: tuple[Network, ...] = ()
        for item in (part.strip() for part in text.split(",")):
            if item.lower() == "private":
                networks.extend(PRIVATE)
            elif item.lower() == "cloudflare":
                edges = tuple(cloudflare)
            elif item.lower() in ("none", ""):
                continue
            else:
                try:
                    networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise TrustedProxiesError(
                        f"trusted_proxies: {item!r} is not an address, a network, 'private', "
                        "'cloudflare' or 'none'"
                    ) from None
        return cls(networks, edges)

    def _trusts(self, host: str) -> bool:
        address = _address(host)
        return address is not None and any(address in network for network in self.networks)

    def _is_edge(self, host: str) -> bool:
        address = _address(host)
        return address is not None and any(address in network for network in self.edges)


def forwarded_client(
    peer: str,
    trusted: TrustedProxies,
    *,
    forwarded_for: str | None = None,
    real_ip: str | None = None,
    connecting_ip: str | None = None,
) -> str:
    """The client's address, as far as trusted proxies vouch for it.

    ``peer`` is who connected to us. Only when it is a proxy of ours or
    Cloudflare's edge do its headers count. The chain of hops is walked back
    from us: the peer, then ``X-Forwarded-For`` read from the right (each
    proxy appends the address it saw). The first hop that is neither ours nor
    an edge is the client. An edge set ``CF-Connecting-IP`` (``connecting_ip``)
    itself, so where the walk meets one and that header is there, it names the
    client; met anywhere else it is a client's own claim and means nothing.
    When every hop is trusted, the first one is the origin; without
    ``X-Forwarded-For``, ``X-Real-IP`` names the client. A header that is not
    a list of addresses is ignored.
    """
    if not (trusted.trusts(peer) or trusted.is_edge(peer)):
        return peer
    hops = _hops(forwarded_for)
    edge_says = _address(connecting_ip.strip()) if connecting_ip else None
    for hop in (peer, *reversed(hops)):
        if trusted.is_edge(hop):
            if edge_says is not None:
                return str(edge_says)
        elif not trusted.trusts(hop):
            return hop
    if hops:
        return hops[0]  # every hop is trusted: the first is the origin
    if real_ip and _address(real_ip.strip()) is not None:
        return str(_address(real_ip.strip()))
    return peer


def _hops(forwarded_for: str | None) -> list[str]:
    """The addresses of an ``X-Forwarded-For`` header, normalised; none when
    it is absent or any of it is not an address."""
    if not forwarded_for:
        return []
    hops = [_address(hop.strip()) for hop in forwarded_for.split(",")]
    if not all(hop is not None for hop in hops):
        return []
    return [str(hop) for hop in hops]


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 from a dual-stack socket
    return address

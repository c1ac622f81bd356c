"""Who a connection really comes from, when a proxy stands in front of us.

FAF runs the server behind Traefik: every TCP connection then reaches us from
Traefik's own address, and a WebSocket's client is named only in its
``X-Forwarded-For`` / ``X-Real-IP`` headers. :class:`TrustedProxies` says
whose word we take for the client's address (those headers, or a PROXY
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


class TrustedProxiesError(ValueError):
    pass


class TrustedProxies:
    """A set of networks, from ``trusted_proxies``: comma-separated addresses
    or networks (``10.0.0.0/8``, ``2001:db8::1``), ``private`` for
    :data:`PRIVATE`, ``none`` for no proxy at all."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)
        # One verdict per address: a proxy's address comes back on every connection.
        self.trusts = lru_cache(maxsize=4096)(self._trusts)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        networks: list[Network] = []
        for item in (part.strip() for part in text.split(",")):
            if item.lower() == "private":
                networks.extend(PRIVATE)
            elif item.lower() in ("none", ""):
                continue
            else:
                try:
                    networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise TrustedProxiesError(
                        f"trusted_proxies: {item!r} is not an address, a network, 'private' or 'none'"
                    ) from None
        return cls(networks)

    def _trusts(self, host: str) -> bool:
        address = _address(host)
        return address is not None and any(address in network for network in self.networks)


def forwarded_client(
    peer: str, forwarded_for: str | None, real_ip: str | None, trusted: TrustedProxies
) -> str:
    """The client's address, as far as trusted proxies vouch for it.

    ``peer`` is who connected to us. Only when it is a trusted proxy do its
    headers count: ``X-Forwarded-For`` read from the right (each proxy appends
    the address it saw), skipping trusted proxies, names the client; without
    it, ``X-Real-IP``. A header that is not a list of addresses is ignored.
    """
    if not trusted.trusts(peer):
        return peer
    if forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        if hops and all(_address(hop) is not None for hop in hops):
            for hop in reversed(hops):
                if not trusted.trusts(hop):
                    return str(_address(hop))
            return str(_address(hops[0]))  # every hop is ours: the first is the origin
    if real_ip and _address(real_ip.strip()) is not None:
        return str(_address(real_ip.strip()))
    return peer


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

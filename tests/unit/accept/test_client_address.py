"""Tests of ``client_address``."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from faf_replay.accept.client_address import (
    CLOUDFLARE,
    TrustedProxies,
    TrustedProxiesError,
    forwarded_client,
    read_ranges,
)
from faf_replay.settings import Settings


class Trust(SynchronousTestCase):
    def test_private_means_networks_of_ones_own(self):
        private = TrustedProxies.parse("private")
        for host in ["127.0.0.1", "10.42.0.7", "172.20.1.1", "192.168.1.1", "100.64.3.4", "::1", "fd00::7"]:
            self.assertTrue(private.trusts(host), host)
        self.assertTrue(private.trusts("::ffff:10.0.0.1"))  # from a dual-stack socket
        for host in ["203.0.113.7", "192.0.2.1", "8.8.8.8", "2001:db8::1", "not an address", ""]:
            self.assertFalse(private.trusts(host), host)

    def test_lists_and_none(self):
        listed = TrustedProxies.parse(" 198.51.100.0/24, 2001:db8::1 ,private")
        self.assertTrue(listed.trusts("198.51.100.200"))
        self.assertTrue(listed.trusts("2001:db8::1"))
        self.assertFalse(listed.trusts("2001:db8::2"))
        self.assertTrue(listed.trusts("10.0.0.1"))
        self.assertFalse(TrustedProxies.parse("none").trusts("127.0.0.1"))
        with self.assertRaises(TrustedProxiesError) as caught:
            TrustedProxies.parse("10.0.0.0/8, traefik")
        self.assertIn("'traefik' is not an address", str(caught.exception))

    def test_forwarded_client(self):
        private = TrustedProxies.parse("private")
        nobody = TrustedProxies.parse("none")
        for peer, forwarded, real, trusted, client in [
            ("10.0.0.5", "198.51.100.9", None, private, "198.51.100.9"),
            ("10.0.0.5", "198.51.100.9, 10.0.0.2", None, private, "198.51.100.9"),  # two proxies of ours
            ("10.0.0.5", "6.6.6.6, 198.51.100.9", None, private, "198.51.100.9"),  # a client's own lie
            ("10.0.0.5", None, "198.51.100.9", private, "198.51.100.9"),
            ("10.0.0.5", "[2001:db8::9]", None, private, "2001:db8::9"),
            ("10.0.0.5", "10.0.0.9, 10.0.0.2", None, private, "10.0.0.9"),  # all ours: the origin
            ("10.0.0.5", "unknown, 198.51.100.9", "198.51.100.8", private, "198.51.100.8"),  # not addresses
            ("10.0.0.5", "junk", None, private, "10.0.0.5"),
            ("10.0.0.5", None, None, private, "10.0.0.5"),
            ("203.0.113.7", "198.51.100.9", "198.51.100.9", private, "203.0.113.7"),  # not a proxy of ours
            ("127.0.0.1", "198.51.100.9", None, nobody, "127.0.0.1"),
        ]:
            self.assertEqual(
                forwarded_client(peer, trusted, forwarded_for=forwarded, real_ip=real),
                client,
                (peer, forwarded),
            )


class Cloudflare(SynchronousTestCase):
    """Cloudflare's edge as a trusted hop, and its CF-Connecting-IP header."""

    EDGE = "173.245.48.5"  # in Cloudflare's 173.245.48.0/20

    def test_the_named_ranges(self):
        edge = TrustedProxies.parse("cloudflare")
        for host in [self.EDGE, "104.16.1.1", "2606:4700::1", "2a06:98c0:3600::103"]:
            self.assertTrue(edge.is_edge(host), host)
            # Anyone can run code there (a Worker): never a proxy of ours, so
            # no PROXY header from it and no exemption from the per-address limit.
            self.assertFalse(edge.trusts(host), host)
        for host in ["10.0.0.1", "104.28.0.1", "198.51.100.9"]:  # 104.28/16 is WARP's users, not the edge
            self.assertFalse(edge.is_edge(host), host)
        both = TrustedProxies.parse("private,cloudflare")
        self.assertTrue(both.trusts("10.0.0.1"))
        self.assertFalse(both.is_edge("10.0.0.1"))
        self.assertEqual(TrustedProxies.parse(Settings().trusted_proxies).edges, CLOUDFLARE)

    def test_replaced_ranges(self):
        ranges = read_ranges("# Cloudflare, 2031\n192.0.2.0/24\n\n2001:db8:cf::/48  # v6\n", "a file")
        edge = TrustedProxies.parse("private,cloudflare", ranges)
        self.assertTrue(edge.is_edge("192.0.2.7"))
        self.assertTrue(edge.is_edge("2001:db8:cf::1"))
        self.assertFalse(edge.trusts(self.EDGE))
        for text, error in [
            ("192.0.2.0/24\nedge\n", "a file, line 2: 'edge' is not a network"),
            ("# empty\n", "no network"),
        ]:
            with self.assertRaises(TrustedProxiesError) as caught:
                read_ranges(text, "a file")
            self.assertIn(error, str(caught.exception))

    def test_the_client_through_cloudflare_and_traefik(self):
        trusted = TrustedProxies.parse("private,cloudflare")
        for peer, forwarded, connecting, client in [
            ("10.0.0.5", f"198.51.100.9, {self.EDGE}", None, "198.51.100.9"),  # FAF's path
            ("10.0.0.5", f"6.6.6.6, 198.51.100.9, {self.EDGE}", None, "198.51.100.9"),  # the player's own lie
            ("10.0.0.5", self.EDGE, "198.51.100.9", "198.51.100.9"),  # Cloudflare's word
            ("10.0.0.5", f"198.51.100.9, {self.EDGE}", "2001:db8::9", "2001:db8::9"),  # its header wins
            ("10.0.0.5", self.EDGE, None, self.EDGE),  # all hops trusted, nothing else said: the origin
            (self.EDGE, None, "198.51.100.9", "198.51.100.9"),  # Cloudflare straight to us
            ("10.0.0.5", "198.51.100.9", "192.0.2.66", "198.51.100.9"),  # no edge on the way: a claim
            ("10.0.0.5", f"{self.EDGE}, 198.51.100.9", "192.0.2.66", "198.51.100.9"),  # a forged edge hop
            ("10.0.0.5", f"198.51.100.9, {self.EDGE}", "not an address", "198.51.100.9"),
            ("203.0.113.7", f"198.51.100.9, {self.EDGE}", "198.51.100.9", "203.0.113.7"),  # not our proxy
        ]:
            self.assertEqual(
                forwarded_client(peer, trusted, forwarded_for=forwarded, connecting_ip=connecting),
                client,
                (peer, forwarded, connecting),
            )
        # Cloudflare's header from a proxy that is not Cloudflare's edge means nothing.
        private = TrustedProxies.parse("private")
        self.assertEqual(
            forwarded_client("10.0.0.5", private, forwarded_for=self.EDGE, connecting_ip="198.51.100.9"),
            self.EDGE,
        )

"""Tests of ``proxy_header``."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.trial.unittest import SynchronousTestCase

from faf_replay.accept.proxy_header import V2_SIGNATURE, ProxiedClient, ProxyHeaderError, ProxyHeaderParser
from tests.unit.accept.test_proxied import parse_whole, proxy_v1, proxy_v2


class Header(SynchronousTestCase):
    def test_v1_and_v2(self):
        for header, client in [
            (proxy_v1("203.0.113.7", 40001), ("203.0.113.7", 40001)),
            (proxy_v1("2001:db8::7", 40002), ("2001:db8::7", 40002)),
            (b"PROXY UNKNOWN\r\n", None),
            (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", None),
            (proxy_v2("203.0.113.7", 40003), ("203.0.113.7", 40003)),
            (proxy_v2("2001:db8::7", 40004), ("2001:db8::7", 40004)),
            (proxy_v2("203.0.113.7", 40005, tlvs=b"\x04\x00\x03abc"), ("203.0.113.7", 40005)),
            (proxy_v2("203.0.113.7", 40006, command=0), None),  # LOCAL: the proxy's own check
        ]:
            self.assertEqual(parse_whole(header + b"P/1/x\0"), (ProxiedClient(client), b"P/1/x\0"), header)

    def test_split_at_every_byte(self):
        for header in (proxy_v1("2001:db8::7", 40002), proxy_v2("203.0.113.7", 40003, tlvs=b"\x01" * 9)):
            data = header + b"P/1/x\0rest"
            for cut in range(len(data) + 1):
                parser = ProxyHeaderParser()
                first = parser.feed(data[:cut])
                if cut < len(header):
                    self.assertIsNone(first, cut)
                    client, rest = parser.feed(data[cut:])
                else:  # complete at once; what came after it is handed on later
                    client, rest = first
                    rest += data[cut:]
                self.assertIsNotNone(client.address)
                self.assertEqual(rest, data[len(header) :], cut)

    def test_malformed(self):
        for data, message in [
            (b"P/1/x\0", "no PROXY header: the connection began with b'P/1/x\\x00'"),
            (b"GET / HTTP/1.1\r\n", "no PROXY header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "malformed PROXY v1 line"),
            (b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", "malformed address"),
            (b"PROXY TCP4 ::1 ::1 1 2\r\n", "an IPv6 address in a TCP4 PROXY v1 line"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n", "malformed port"),
            (b"PROXY " + b"x" * 120, "PROXY v1 line longer than 107 bytes"),
            (b"PROXY \xff\r\n", "not ASCII"),
            (V2_SIGNATURE + b"\x11\x11\x00\x00", "PROXY v2 header of version 1"),
            (V2_SIGNATURE + b"\x22\x11\x00\x00", "PROXY v2 header with command 2"),
            (V2_SIGNATURE + b"\x21\x11\x00\x04abcd", "IPv4 addresses cut short"),
            (V2_SIGNATURE + b"\x21\x11\xff\xff", "PROXY v2 header of 65535 bytes"),
        ]:
            with self.assertRaises(ProxyHeaderError, msg=data) as caught:
                ProxyHeaderParser().feed(data)
            self.assertIn(message, str(caught.exception), data)

    @settings(max_examples=200, derandomize=True)
    @given(
        st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
        st.integers(0, 65535),
        st.booleans(),
        st.binary(max_size=40),
    )
    def test_reads_what_twisted_reads(self, address, port, version_two, rest):
        """Twisted's own parsers, as an independent reader of the same headers."""
        host = str(address)
        header = proxy_v2(host, port) if version_two else proxy_v1(host, port)
        ours, after = parse_whole(header + rest)
        theirs = (V2Parser if version_two else V1Parser).parse(header if version_two else header[:-2])
        host, port = ours.address
        self.assertEqual(ipaddress.ip_address(host), ipaddress.ip_address(theirs.source.host))
        self.assertEqual(port, theirs.source.port)
        self.assertEqual(after, rest)

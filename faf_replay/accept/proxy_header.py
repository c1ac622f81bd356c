"""The PROXY protocol header (HAProxy's, versions 1 and 2), read incrementally.

A proxy that speaks it (HAProxy ``send-proxy``, Traefik ``proxyProtocol``,
cloud load balancers) sends one header at the start of each connection naming
the client it accepted the connection from; the client's own bytes follow. Like
``accept/header.py``, the header may arrive split at any byte, bytes after it
belong to the stream, and anything malformed is refused at once with a reason.
Pure logic, no Twisted; ``proxied.py`` puts it in front of a factory.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
#: A version 1 header is at most 107 bytes, CRLF included.
V1_LIMIT = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16  # signature, version and command, family, length
#: Addresses take 36 bytes at most; the rest are TLVs, which we skip.
V2_LIMIT = _V2_FIXED + 4096


#: v2 address families we read: TCP over IPv4, TCP over IPv6 (an address's size).
_TCP = {0x11: 4, 0x21: 16}


class ProxyHeaderError(ValueError):
    pass


@dataclass(frozen=True)
class ProxiedClient:
    """The client the proxy names; None for a connection of the proxy's own
    (v2 ``LOCAL``, v1 ``UNKNOWN``: a health check) or an unknown family."""

    address: tuple[str, int] | None


class ProxyHeaderParser:
    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[ProxiedClient, bytes] | None:
        """The client and the bytes after the header once it is complete,
        None while more is needed; raises :class:`ProxyHeaderError`."""
        self._buffer += data
        buffer = self._buffer
        if V1_PREFIX.startswith(buffer[: len(V1_PREFIX)]):
            return self._v1(buffer)
        if V2_SIGNATURE.startswith(buffer[: len(V2_SIGNATURE)]):
            return self._v2(buffer)
        raise ProxyHeaderError(f"no PROXY header: the connection began with {buffer[:16]!r}")

    def _v1(self, buffer: bytes) -> tuple[ProxiedClient, bytes] | None:
        end = buffer.find(b"\r\n", 0, V1_LIMIT)
        if end < 0:
            if len(buffer) >= V1_LIMIT:
                raise ProxyHeaderError(f"PROXY v1 line longer than {V1_LIMIT} bytes")
            return None
        return parse_v1(buffer[:end]), buffer[end + 2 :]

    def _v2(self, buffer: bytes) -> tuple[ProxiedClient, bytes] | None:
        if len(buffer) < _V2_FIXED:
            return None
        length = struct.unpack_from("!H", buffer, 14)[0]
        if _V2_FIXED + length > V2_LIMIT:
            raise ProxyHeaderError(f"PROXY v2 header of {length} bytes; at most {V2_LIMIT - _V2_FIXED}")
        if len(buffer) < _V2_FIXED + length:
            return None
        return parse_v2(buffer[12], buffer[13], buffer[16 : 16 + length]), buffer[16 + length :]


def parse_v1(line: bytes) -> ProxiedClient:
    """``PROXY TCP4 <source> <destination> <source port> <destination port>``."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    fields = text.split(" ")
    if fields[:2] == ["PROXY", "UNKNOWN"]:
        return ProxiedClient(None)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 line {text!r}")
    version = 4 if fields[1] == "TCP4" else 6
    source = _ip(fields[2], version, text)
    _ip(fields[3], version, text)
    port = _port(fields[4], text)
    _port(fields[5], text)
    return ProxiedClient((source, port))


def parse_v2(version_command: int, family: int, body: bytes) -> ProxiedClient:
    """The 16-byte header's last fields and what follows it."""
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header of version {version_command >> 4}")
    command = version_command & 0x0F
    if command == 0:  # LOCAL: the proxy's own connection
        return ProxiedClient(None)
    if command != 1:
        raise ProxyHeaderError(f"PROXY v2 header with command {command}")
    if family not in _TCP:
        return ProxiedClient(None)  # unspecified, UDP or a unix socket: nothing we can use
    size = _TCP[family]
    if len(body) < 2 * size + 4:  # source, destination, their ports
        raise ProxyHeaderError(f"PROXY v2 IPv{4 if size == 4 else 6} addresses cut short")
    source = ipaddress.ip_address(body[:size])  # 4 bytes make an IPv4 address, 16 an IPv6 one
    return ProxiedClient((str(source), struct.unpack_from("!H", body, 2 * size)[0]))


def _ip(text: str, version: int, line: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"malformed address in PROXY v1 line {line!r}") from None
    if address.version != version:
        raise ProxyHeaderError(f"an IPv{address.version} address in a TCP{version} PROXY v1 line")
    return str(address)


def _port(text: str, line: str) -> int:
    if not text.isdigit() or not text.isascii() or int(text) > 65535:
        raise ProxyHeaderError(f"malformed port in PROXY v1 line {line!r}")
    return int(text)

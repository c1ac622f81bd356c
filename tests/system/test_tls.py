"""TLS on the listening ports: a self-signed certificate and clients that verify it."""

from __future__ import annotations

import datetime
import ipaddress
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, readBody

from tests.support.clients import Uploader, connect_websocket, start_server
from tests.support.recordings import recording
from tests.system.test_end_to_end import read_saved


def self_signed(directory) -> tuple[str, str, bytes]:
    """A key and a certificate for ``localhost`` (and 127.0.0.1), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory + "-key.pem", directory + "-cert.pem"
    with open(key_path, "wb") as file:
        file.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    with open(cert_path, "wb") as file:
        file.write(cert_pem)
    return key_path, cert_path, cert_pem


class Tls(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_websocket_and_http_over_tls(self):
        key, cert, cert_pem = self_signed(self.mktemp())
        tls = f"interface=127.0.0.1:privateKey={key}:certKey={cert}"
        service, _ = yield start_server(self, **{"ws-port": f"ssl:0:{tls}", "http-port": f"ssl:0:{tls}"})
        wss = (yield service.listening("websocket")).getHost().port
        https = (yield service.listening("http")).getHost().port
        trust = ssl.Certificate.loadPEM(cert_pem)

        # A client that checks the certificate against the one it trusts, for "localhost".
        context = ssl.optionsForClientTLS("localhost", trustRoot=trust)
        yield connect_websocket(
            wss, Uploader(90, "a.SCFAreplay", recording("example"), [4000]), context=context
        )
        yield service.registry.when_done(90)
        self.assertEqual(read_saved(service.registry.settings.vault, 90)[1], recording("example"))

        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust))
        response = yield agent.request(b"GET", f"https://localhost:{https}/health".encode())
        self.assertEqual(json.loads((yield readBody(response)))["status"], "ok")

    @inlineCallbacks
    def test_a_client_that_does_not_trust_the_certificate_is_refused(self):
        key, cert, _ = self_signed(self.mktemp())
        service, _ = yield start_server(
            self, **{"ws-port": f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"}
        )
        wss = (yield service.listening("websocket")).getHost().port
        context = ssl.optionsForClientTLS("localhost")  # the system's roots: ours is not among them
        with self.assertRaises(Exception):  # noqa: B017 - the handshake fails one way or another
            yield connect_websocket(wss, Uploader(91, "a", b"x", [1]), context=context)
        self.assertNotIn(91, service.registry.games)

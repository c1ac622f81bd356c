"""The one Twisted internal the server reads: a listener's port Deferred (``listening``)."""

from twisted.application import strports
from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from faf_replay.server.listening import is_listening, listening


class Listening(TestCase):
    @inlineCallbacks
    def test_a_strports_listener_says_its_port_and_whether_it_is_open(self):
        listener = strports.service(
            "tcp:0:interface=127.0.0.1", Factory.forProtocol(Protocol), reactor=reactor
        )
        self.assertFalse(is_listening(listener))
        listener.startService()
        port = yield listening(listener)
        self.assertGreater(port.getHost().port, 0)
        self.assertTrue(is_listening(listener))
        yield listener.stopService()  # the port Deferred kept its result: it can stop
        self.assertFalse(is_listening(listener))

    def test_anything_else_is_refused_loudly(self):
        self.assertRaises(RuntimeError, listening, Service())
        self.assertFalse(is_listening(Service()))

"""Client-address forwarding to a real Postfix: XCLIENT, PROXY v1, PROXY v2.

A PROXY-protocol listener poses the client 203.0.113.9 (TEST-NET-3); the
private Postfix's maillog must show that address for the queued message.
"""

import re
import unittest

from harness import GateTestCase, Postfix, PostfixError, config_text

POSED = "203.0.113.9"
BODY = b"Subject: forwarded\r\n\r\nhello postfix\r\n"


class ForwardingTest(GateTestCase):

    @classmethod
    def setUpClass(cls):
        cls.pf = Postfix()
        try:
            cls.pf.start()
        except (PostfixError, OSError) as e:
            cls.pf.cleanup()
            raise unittest.SkipTest("cannot start a private Postfix here: %s" % e)

    @classmethod
    def tearDownClass(cls):
        cls.pf.cleanup()

    def _send(self, forward, port, posed=POSED):
        gate = self.gate_for(["127.0.0.1:%d" % port], forward=forward,
                             listen=["proxy_protocol on"], connect_timeout="5s")
        c = self.client(gate.port, timeout=20)
        c.send(b"PROXY TCP4 %s 192.0.2.1 40000 25\r\n" % posed.encode())
        r = c.read_reply()
        self.assertEqual(r.code, 220, r)
        self.assertIn("Postfix", r.last)
        r = c.cmd("EHLO client.test")
        self.assertEqual(r.code, 250, r)
        kws = [l[4:].split(" ")[0].upper() for l in r.lines[1:]]
        self.assertNotIn("XCLIENT", kws)
        self.assertNotIn("CHUNKING", kws)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([x.code for x in c.read_replies(3)], [250, 250, 354])
        c.send(BODY + b".\r\n")
        r = c.read_reply(timeout=20)
        self.assertEqual(r.code, 250, r)
        m = re.search(r"queued as ([0-9A-Za-z]+)", r.last)
        self.assertTrue(m, r)
        self.assertEqual(c.cmd("QUIT").code, 221)
        qid = m.group(1)
        line = self.pf.wait_log(r"%s: client=(\S*)" % qid, timeout=15)
        self.assertTrue(line, "no client= line for %s in maillog:\n%s"
                        % (qid, self.pf.log_text()[-3000:]))
        # and the message was really handed on
        self.assertTrue(self.pf.wait_log(r"%s: to=<b@test.example>.*status=sent" % qid, 15),
                        self.pf.log_text()[-3000:])
        return line.group(1)

    def test_forward_xclient(self):
        client = self._send("xclient", self.pf.port)
        self.assertTrue(client.endswith("[%s]" % POSED), client)

    def test_forward_proxy_v1(self):
        client = self._send("proxy-v1", self.pf.proxy_port)
        self.assertTrue(client.endswith("[%s]" % POSED), client)

    def test_forward_proxy_v2(self):
        client = self._send("proxy-v2", self.pf.proxy_port, posed="203.0.113.10")
        self.assertTrue(client.endswith("[203.0.113.10]"), client)

    def test_forward_none_control(self):
        """Control: without forwarding Postfix sees smtpgate's own address, so
        the tests above do discriminate."""
        client = self._send("none", self.pf.port)
        self.assertTrue(client.endswith("[127.0.0.1]"), client)

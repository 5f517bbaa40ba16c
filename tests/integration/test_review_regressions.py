"""Regression tests for bugs found in review: blanks in command lines, the
pregreet timer behind a PROXY header, transactions the MTA refused, STARTTLS
in the middle of a transaction, pipelined RSET and max_recipients, and a
half-closed client during the reconnect after a refused body."""

import socket
import struct
import time

from harness import GateTestCase, SMTPClient
from tlsutil import shared_pki, starttls_wrap

MSG = b"Subject: r\r\n\r\nbody\r\n"


class BlankTest(GateTestCase):
    """A TAB separates words as a space does; a line that does not begin
    with a verb is refused, never relayed."""

    def setUp(self):
        super().setUp()
        self.rec = self.start_recorder()
        self.gate = self.gate_for(["127.0.0.1:%d" % self.rec.port],
                                  globals_=["max_message_size 1K", "max_recipients 2"])

    def test_tab_after_mail_is_still_judged(self):
        c = self.greet(self.gate.port)
        r = c.cmd("MAIL\tFROM:<a@x.example> SIZE=999999999")
        self.assertTrue(r.raw.startswith(b"552 5.3.4"), r)
        self.assertFalse(any(cmd.upper().startswith(b"MAIL") for cmd in self.rec.all_commands()))

    def test_tab_after_rcpt_counts(self):
        c = self.greet(self.gate.port)
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        codes = [c.cmd("RCPT\tTO:<r%d@test.example>" % i).code for i in range(4)]
        self.assertEqual(codes, [250, 250, 452, 452])

    def test_leading_blank_refused(self):
        c = self.greet(self.gate.port)
        for line in (" RCPT TO:<x@test.example>", "\tMAIL FROM:<a@x.example>", "MAIL\x0bFROM:<a@x.example>"):
            r = c.cmd(line)
            self.assertEqual(r.code, 500, "%r: %r" % (line, r))
        self.assertEqual(c.cmd("NOOP").code, 250)
        self.assertFalse(any(b"RCPT" in cmd.upper() or b"MAIL" in cmd.upper()
                             for cmd in self.rec.all_commands()))

    def test_tab_xclient_never_relayed(self):
        c = self.greet(self.gate.port)
        self.assertEqual(c.cmd("XCLIENT\tADDR=10.9.9.9 LOGIN=admin").code, 502)
        self.assertFalse(any(b"XCLIENT" in cmd.upper() for cmd in self.rec.all_commands()))

    def test_data_tab_cannot_smuggle(self):
        c = self.greet(self.gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\t\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(b"Subject: s\r\n\r\nbody\n.\nMAIL FROM:<smuggled@x.example>\n\r\n.\r\n")
        self.assertEqual(c.read_reply().code, 250)
        msgs = self.rec.wait_messages(1)
        time.sleep(0.3)
        self.assertEqual(len(self.rec.messages()), 1)
        self.assertIn(b"..\r\nMAIL FROM:<smuggled@x.example>", msgs[0].raw)
        self.assertFalse(any(b"smuggled" in cmd for cmd in self.rec.all_commands()))


class TransactionTest(GateTestCase):

    def test_mail_refused_by_mta_closes_the_transaction(self):
        rec = self.start_recorder(refuse_mail=b"bad@")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_message_size 1K"])
        c = self.greet(gate.port)
        self.assertEqual(c.cmd("MAIL FROM:<bad@x.example>").code, 550)
        # no transaction is open: the next MAIL is judged again
        r = c.cmd("MAIL FROM:<spoof@x.example> SIZE=999999999")
        self.assertTrue(r.raw.startswith(b"552 5.3.4"), r)
        # and RCPT without a transaction is answered here
        r = c.cmd("RCPT TO:<b@test.example>")
        self.assertTrue(r.raw.startswith(b"503 5.5.1"), r)
        self.assertFalse(any(cmd.upper().startswith(b"RCPT") for cmd in rec.all_commands()))

    def test_pipelined_rset_does_not_lift_max_recipients(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_recipients 2"])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<bad1>\r\nRCPT TO:<bad2>\r\nRSET\r\n"
               b"MAIL FROM:<a@x.example>\r\nRCPT TO:<g1@test.example>\r\nRCPT TO:<g2@test.example>\r\n")
        c.read_replies(7)
        codes = [c.cmd("RCPT TO:<g%d@test.example>" % i).code for i in (3, 4)]
        self.assertEqual(codes, [452, 452])

    def test_starttls_mid_transaction_resets_the_mta(self):
        rec = self.start_recorder()
        mport = 0
        gate = self.gate_for(["127.0.0.1:%d" % rec.port],
                             globals_=[shared_pki().tls_block(), "max_recipients 2"],
                             listen=["tls starttls"])
        c = self.greet(gate.port)
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("STARTTLS").code, 220)
        starttls_wrap(c, shared_pki().client_context(), server_hostname="localhost")
        # no EHLO, no MAIL: RCPT has no transaction, here or at the MTA
        r = c.cmd("RCPT TO:<b@test.example>")
        self.assertTrue(r.raw.startswith(b"503"), r)
        self.assertIn(b"RSET", rec.all_commands())
        self.assertEqual(c.cmd("EHLO again.test").code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<b@test.example>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        self.assertEqual(c.cmd(MSG.decode() + ".").code, 250)
        self.assertEqual(len(rec.wait_messages(1)), 1)


class TimingTest(GateTestCase):

    def test_pregreet_behind_proxy_header(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port],
                             globals_=["timeout command 15s"],
                             listen=["proxy_protocol on", "pregreet 1s"])
        c = SMTPClient(gate.port, timeout=10)
        self.addCleanup(c.close)
        t0 = time.monotonic()
        c.send(b"PROXY TCP4 203.0.113.9 127.0.0.1 4242 25\r\n")
        r = c.read_reply(timeout=10)
        took = time.monotonic() - t0
        self.assertEqual(r.code, 220)
        self.assertLess(took, 3.0, "banner after %.1fs with pregreet 1s" % took)
        self.assertGreater(took, 0.9)

    def test_half_closed_client_after_refused_body(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_message_size 1K"])
        s = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"EHLO x\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        buf = b""
        while b"354 " not in buf:
            d = s.recv(65536)
            self.assertTrue(d, buf)
            buf += d
        s.sendall(b"x" * 3000 + b"\r\n.\r\nMAIL FROM:<a@x.example>\r\n"
                  b"RCPT TO:<b@test.example>\r\nQUIT\r\n")
        s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        self.assertIn(b"552 5.3.4", buf)
        tail = buf[buf.index(b"552 5.3.4"):]
        self.assertRegex(tail, rb"552 [^\n]*\n250 [^\n]*\n250 [^\n]*\n221 ")

"""Regression tests for bugs found in review: blanks in command lines, the
pregreet timer behind a PROXY header, transactions the MTA refused, STARTTLS
in the middle of a transaction, pipelined RSET and max_recipients, and a
half-closed client during the reconnect after a refused body; then, from a
second review: a half-closed client behind a slow MTA, a PROXY header and a
ClientHello in one segment, the RSET after STARTTLS, and bad lines inside an
AUTH exchange."""

import socket
import struct
import time

from harness import GateTestCase, SMTPClient, wait_until
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


class SecondReviewTest(GateTestCase):

    def test_half_close_behind_slow_mta_keeps_the_message(self):
        """The client sends body, dot and QUIT, then half-closes while the
        MTA is not reading: the body still held in smtpgate must reach the
        MTA with its dot, and the client must get both replies."""
        rec = self.start_recorder(mode="pause_body", rcvbuf=4096)
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        line = b"x" * 998 + b"\r\n"
        # Where the end of file lands against the held body depends on the
        # kernel's buffer sizes: a few sizes around what they hold.
        for attempt, lines in enumerate((1000, 2000, 3000, 3900, 5000)):
            body = line * lines
            c = self.greet(gate.port, timeout=30.0)
            c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
            self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
            c.send(body + b".\r\nQUIT\r\n")
            c.sock.shutdown(socket.SHUT_WR)
            r = c.read_replies(2, timeout=30.0)
            self.assertEqual([x.code for x in r], [250, 221], r)
            msgs = rec.wait_messages(attempt + 1)
            self.assertEqual(len(msgs), attempt + 1)
            self.assertEqual(msgs[-1].raw, body)
            c.close()

    def test_proxy_header_and_client_hello_in_one_segment(self):
        """A load balancer may send its PROXY header and the client's first
        bytes together: on an implicit TLS listener those are a ClientHello."""
        import ssl
        pki = shared_pki()
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port], globals_=[pki.tls_block()],
                             listen=["tls implicit", "proxy_protocol on"])
        ctx = pki.client_context()
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
        raw = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
        self.addCleanup(raw.close)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        raw.sendall(b"PROXY TCP4 192.0.2.7 192.0.2.1 4321 465\r\n" + out.read())
        deadline = time.monotonic() + 10
        banner, shaken = b"", False
        while b"\r\n" not in banner and time.monotonic() < deadline:
            d = raw.recv(65536)
            self.assertTrue(d, "closed during the handshake")
            inc.write(d)
            try:
                if not shaken:
                    obj.do_handshake()
                    shaken = True
                banner += obj.read(4096)
            except ssl.SSLWantReadError:
                pass
            pending = out.read()
            if pending:
                raw.sendall(pending)
        self.assertTrue(banner.startswith(b"220"), banner)
        gate.wait_event("connect", pred=lambda e: e.get("ip") == "192.0.2.7")

    def test_rset_after_starttls_is_timed(self):
        """An MTA that never answers the RSET smtpgate sends after STARTTLS
        must not keep an idle session open for ever."""
        from tlsutil import starttls_wrap
        pki = shared_pki()
        rec = self.start_recorder(mode="ignore_rset")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port],
                             globals_=[pki.tls_block(), "timeout command 1s"],
                             listen=["tls starttls"])
        c = self.greet(gate.port)
        self.assertEqual(c.cmd("STARTTLS").code, 220)
        starttls_wrap(c, pki.client_context())
        t0 = time.monotonic()
        data, closed = c.read_until_close(timeout=8.0)
        self.assertTrue(closed, "session still open after %.1f s: %r" % (time.monotonic() - t0, data))
        self.assertIn(b"421 4.4.2", data)

    def test_bad_line_inside_auth_cancels_the_exchange(self):
        """A NUL or an overlong line as the answer to a 334 must not leave
        the MTA waiting for that answer: the exchange is cancelled with "*"
        and every later command gets its own reply."""
        rec = self.start_recorder(auth=True)
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        for bad in (b"dXNlcg\x00==\r\n", b"A" * 13000 + b"\r\n"):
            c = self.greet(gate.port)
            self.assertEqual(c.cmd("AUTH LOGIN").code, 334)
            c.send(bad)
            r = c.read_reply()
            # the MTA's own answer to "*"
            self.assertTrue(r.raw.startswith(b"501 5.7.0 Authentication aborted"), r)
            self.assertEqual(c.cmd("NOOP").code, 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
            self.assertIn(b"NOOP", rec.all_commands())
            c.close()


class OutOfStepMTATest(GateTestCase):

    def test_reply_in_the_middle_of_the_body_ends_the_session(self):
        """An MTA that answers before the final dot (and then not the dot)
        is out of step: relaying on would answer the dot with the reply to
        a later command.  The client gets 421 and no 250 for the message."""
        rec = self.start_recorder(mode="early_reply")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(b"Subject: s\r\n\r\n")
        time.sleep(0.3)
        c.send(b"body\r\n.\r\nNOOP\r\n")
        data, closed = c.read_until_close(timeout=8.0)
        self.assertTrue(closed, data)
        self.assertTrue(data.startswith(b"421 4.4.2"), data)
        self.assertNotIn(b"250", data)
        gate.wait_event("close")
        self.assertFalse(gate.events("message"), gate.log_text())


class SizeCountTest(GateTestCase):

    def test_transparency_dots_are_not_counted(self):
        """RFC 1870: the size excludes the dots a sender doubles for
        transport.  300 lines of one dot are 900 octets of message."""
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_message_size 1K"])
        c = self.greet(gate.port)
        body = b"..\r\n" * 300                   # 1,200 octets on the wire
        c.send(b"MAIL FROM:<a@x.example> SIZE=900\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(body + b".\r\n")
        self.assertEqual(c.read_reply().code, 250)
        self.assertEqual(rec.wait_messages(1)[0].raw, body)
        ev = gate.wait_event("message")
        self.assertEqual(ev[0].get("size"), "900", ev)
        # and one octet more than 1K of message is still refused
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(b"..\r\n" * 341 + b"xx\r\n.\r\n")   # 1,023 + 4 octets
        r = c.read_reply()
        self.assertTrue(r.raw.startswith(b"552 5.3.4"), r)


class SetupFailoverTest(GateTestCase):

    def test_mta_closing_during_setup_gives_way_to_the_next(self):
        """A server that greets and then drops the XCLIENT smtpgate sends
        has not served the client yet: the next server is tried, as
        for a failed connect, and the client sees one banner only."""
        xehlo = ["rec.test", "PIPELINING", "XCLIENT NAME ADDR PROTO HELO LOGIN"]
        bad = self.start_recorder(mode="close_in_setup", ehlo=xehlo)
        good = self.start_recorder(ehlo=xehlo)
        gate = self.gate_for(["127.0.0.1:%d" % bad.port, "127.0.0.1:%d" % good.port],
                             forward="xclient")
        c = self.client(gate.port)
        r = c.read_reply()
        self.assertEqual(r.code, 220, r)
        self.assertIn(good.token, r.text, r)
        self.assertEqual(c.cmd("EHLO client.test").code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)
        self.assertTrue(any(cmd.startswith(b"XCLIENT") for cmd in good.all_commands()))
        ev = gate.wait_event("upstream_error")
        self.assertIn("127.0.0.1:%d" % bad.port, ev[0].get("server"), ev)

    def test_mta_resetting_after_its_banner_gives_way_to_the_next(self):
        """The reset shows up on smtpgate's XCLIENT write or on its next
        read, whichever comes first: either way the next server serves."""
        xehlo = ["rec.test", "PIPELINING", "XCLIENT NAME ADDR PROTO HELO LOGIN"]
        for _ in range(3):
            bad = self.start_recorder(mode="rst_after_banner", ehlo=xehlo)
            good = self.start_recorder(ehlo=xehlo)
            gate = self.gate_for(["127.0.0.1:%d" % bad.port, "127.0.0.1:%d" % good.port],
                                 forward="xclient")
            c = self.client(gate.port)
            r = c.read_reply()
            self.assertEqual(r.code, 220, "%r\n%s" % (r, gate.log_text()[-1500:]))
            self.assertIn(good.token, r.text, r)
            self.assertEqual(c.cmd("QUIT").code, 221)

    def test_every_server_closing_during_setup_is_unavailable(self):
        xehlo = ["rec.test", "PIPELINING", "XCLIENT NAME ADDR PROTO HELO LOGIN"]
        bad = self.start_recorder(mode="close_in_setup", ehlo=xehlo)
        gate = self.gate_for(["127.0.0.1:%d" % bad.port], forward="xclient")
        c = self.client(gate.port)
        data, closed = c.read_until_close(timeout=8.0)
        self.assertTrue(closed, data)
        self.assertEqual(data, b"421 4.3.2 Service not available\r\n")


class SizeParamTest(GateTestCase):

    def test_size_given_twice_is_judged_by_the_largest(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_message_size 1K"])
        c = self.greet(gate.port)
        for line in ("MAIL FROM:<a@x.example> SIZE=10 SIZE=2000",
                     "MAIL FROM:<a@x.example> SIZE=2000 BODY=8BITMIME SIZE=10"):
            r = c.cmd(line)
            self.assertTrue(r.raw.startswith(b"552 5.3.4"), (line, r))
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example> SIZE=10 SIZE=20").code, 250)
        self.assertFalse([x for x in rec.all_commands() if b"2000" in x])


class StalledBodyTest(GateTestCase):

    def test_mta_taking_no_body_is_its_timeout(self):
        """When the MTA reads none of the body for `timeout data`, the
        client is not the idle one: the log and the 421 say upstream."""
        import threading
        rec = self.start_recorder(mode="pause_body", rcvbuf=4096)
        rec.PAUSE_BODY_S = 6.0
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["timeout data 1s"])
        c = self.greet(gate.port, timeout=15.0)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])

        def push():
            try:
                c.sock.sendall(b"x" * 998 + b"\r\n" * 1 + (b"y" * 998 + b"\r\n") * 8000)
            except OSError:
                pass
        t = threading.Thread(target=push, daemon=True)
        t.start()
        data, closed = c.read_until_close(timeout=10.0)
        self.assertTrue(closed, data)
        self.assertIn(b"421 4.4.2 Upstream timeout", data)
        self.assertTrue(gate.wait_event("upstream_timeout"), gate.log_text())
        self.assertFalse(rec.messages())
        t.join(timeout=5)


class AfterTheDotTest(GateTestCase):
    """SPEC 3.6: what follows the real end is parsed as commands under
    every rule and limit.  The end of data ends the transaction (RFC 5321
    4.1.1.4), so a MAIL pipelined behind the dot starts a new one, judged
    afresh, whether or not the MTA has answered the dot yet."""

    def _run(self, mode):
        rec = self.start_recorder(mode=mode)
        gate = self.gate_for(["127.0.0.1:%d" % rec.port],
                             globals_=["max_recipients 2", "max_message_size 1K"])
        c = self.greet(gate.port, timeout=15)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<r1@test.example>\r\n"
               b"RCPT TO:<r2@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(4)], [250, 250, 250, 354])
        c.send(b"Subject: one\r\n\r\nfirst\r\n.\r\n"
               b"MAIL FROM:<big@x.example> SIZE=999999\r\n"
               b"MAIL FROM:<e@x.example>\r\nRCPT TO:<s1@test.example>\r\n"
               b"RCPT TO:<s2@test.example>\r\nRCPT TO:<s3@test.example>\r\nDATA\r\n")
        r = c.read_replies(7, timeout=15)
        self.assertEqual([x.code for x in r], [250, 552, 250, 250, 250, 452, 354], r)
        c.send(b"Subject: two\r\n\r\nsecond\r\n.\r\n")
        self.assertEqual(c.read_reply(timeout=15).code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)
        msgs = rec.wait_messages(2)
        self.assertEqual([m.mail for m in msgs], [b"MAIL FROM:<a@x.example>", b"MAIL FROM:<e@x.example>"])
        self.assertEqual([len(m.rcpts) for m in msgs], [2, 2])
        self.assertFalse([x for x in rec.all_commands() if b"big@" in x])
        ev = gate.wait_event("message", n=2)
        self.assertEqual([(e.get("sender"), e.get("rcpts")) for e in ev],
                         [("a@x.example", "2"), ("e@x.example", "2")], ev)

    def test_new_transaction_behind_the_dot(self):
        self._run("normal")

    def test_new_transaction_behind_the_dot_slow_mta(self):
        self._run("slow")


class ProxyFamilyTest(GateTestCase):
    """A dual-stack balancer gives IPv4 clients as ::ffff:a.b.c.d; the
    PROXY header toward the MTA must still carry them (one family per
    header)."""

    def _forward(self, header, version):
        rec = self.start_recorder(expect_proxy=True)
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], forward="proxy-v%d" % version,
                             listen=["proxy_protocol on"])
        c = self.client(gate.port)
        c.send(header)
        r = c.read_reply()
        self.assertEqual(r.code, 220, "%r; log:\n%s" % (r, gate.log_text()[-1500:]))
        self.assertEqual(c.cmd("QUIT").code, 221)
        self.assertTrue(wait_until(lambda: rec.conns and rec.conns[0].proxy_header, 5))
        return rec.conns[0].proxy_header

    def test_mapped_client_and_destination_go_as_ipv4(self):
        got = self._forward(b"PROXY TCP6 ::ffff:198.51.100.9 ::ffff:192.0.2.1 4321 25\r\n", 1)
        self.assertEqual(got, b"PROXY TCP4 198.51.100.9 192.0.2.1 4321 25\r\n")

    def test_mapped_client_behind_ipv6_destination_goes_as_ipv6(self):
        got = self._forward(b"PROXY TCP6 ::ffff:198.51.100.9 2001:db8::1 4321 25\r\n", 1)
        self.assertEqual(got, b"PROXY TCP6 ::ffff:198.51.100.9 2001:db8::1 4321 25\r\n")
        got2 = self._forward(b"PROXY TCP6 ::ffff:198.51.100.9 2001:db8::1 4321 25\r\n", 2)
        self.assertTrue(got2.startswith(b"\r\n\r\n\x00\r\nQUIT\n\x21\x21"), got2)   # v2, PROXY, TCP over IPv6
        self.assertEqual(got2[16 + 12:16 + 16], bytes([198, 51, 100, 9]))



class HungMTATest(GateTestCase):

    def test_pipelined_commands_do_not_stretch_the_reply_timeout(self):
        """Each reply is awaited for `timeout command` from when it is owed:
        commands the client keeps sending to a hung MTA must not restart
        the wait."""
        rec = self.start_recorder(mode="mute_after_ehlo")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["timeout command 2s"])
        c = self.greet(gate.port, timeout=15)
        t0 = time.monotonic()
        c.send(b"NOOP\r\n")
        got = b""
        while time.monotonic() - t0 < 12:
            time.sleep(0.7)
            try:
                c.send(b"NOOP\r\n")
            except OSError:
                break
            data, closed = c.read_until_close(timeout=0.01)
            got += data
            if closed or b"421" in got:
                break
        self.assertIn(b"421 4.4.2", got)
        self.assertLess(time.monotonic() - t0, 6.0, "421 only after %.1fs" % (time.monotonic() - t0))



class MTA421Test(GateTestCase):

    def test_mta_421_is_the_last_word(self):
        """RFC 5321 3.8: a 421 closes the channel.  The client gets the
        MTA's 421 once, nothing after it: no second 421 of ours for the
        close, no local answers for commands pipelined behind it."""
        rec = self.start_recorder(mode="close_421_rcpt")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\n"
               b"RCPT TO:<c@test.example>\r\nDATA\r\n")
        data, closed = c.read_until_close(timeout=8.0)
        self.assertTrue(closed, data)
        self.assertEqual(data, b"250 2.1.0 Ok\r\n421 4.3.2 Shutting down\r\n")


class LongAuthAnswerTest(GateTestCase):

    def test_auth_answer_up_to_12288_octets(self):
        """RFC 4954 4: answers inside AUTH (Kerberos, OAuth tokens) may be
        up to 12288 octets, longer than a command line."""
        import base64
        rec = self.start_recorder(auth=True)
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.greet(gate.port)
        self.assertEqual(c.cmd("AUTH LOGIN").code, 334)
        big = base64.b64encode(b"u" * 9000)          # 12,000 octets
        self.assertEqual(len(big), 12000)
        self.assertEqual(c.cmd(big).code, 334)
        self.assertEqual(c.cmd(base64.b64encode(b"good")).code, 235)
        # one octet past the limit: the exchange is cancelled toward the MTA
        c2 = self.greet(gate.port)
        self.assertEqual(c2.cmd("AUTH LOGIN").code, 334)
        r = c2.cmd(b"A" * 12287)
        self.assertTrue(r.raw.startswith(b"501 5.7.0"), r)
        self.assertEqual(c2.cmd("NOOP").code, 250)


class TransactionStateTest(GateTestCase):
    """Third review: smtpgate's idea of the transaction never drifts from the
    MTA's, so max_recipients and SIZE= cannot be slipped past."""

    def test_nested_mail_is_answered_here(self):
        rec = self.start_recorder(refuse_mail=b"bad@")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port],
                             globals_=["max_message_size 1K", "max_recipients 2"])
        c = self.greet(gate.port)
        # the second MAIL waits for the first one's reply, then is judged
        # as the MTA would read it: no transaction is open, so its SIZE=
        # is what refuses it (relayed unjudged, it would have opened one)
        c.send(b"MAIL FROM:<bad@x.example>\r\nMAIL FROM:<x@y.example> SIZE=500000000\r\n"
               b"RCPT TO:<r1@test.example>\r\n")
        rs = c.read_replies(3)
        self.assertEqual([r.raw[:9] for r in rs], [b"550 5.7.1", b"552 5.3.4", b"503 5.5.1"], rs)
        # and a good second MAIL goes on as it would straight to the MTA
        c.send(b"MAIL FROM:<bad@x.example>\r\nMAIL FROM:<ok@y.example>\r\n"
               b"RCPT TO:<r1@test.example>\r\nRSET\r\n")
        rs = c.read_replies(4)
        self.assertEqual([r.code for r in rs], [550, 250, 250, 250], rs)
        # within an open transaction too
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        r = c.cmd("MAIL FROM:<b@x.example>")
        self.assertEqual(r.raw, b"503 5.5.1 Error: nested MAIL command\r\n")
        c.cmd("QUIT")
        mails = [cmd for cmd in rec.all_commands() if cmd.upper().startswith(b"MAIL")]
        self.assertEqual(mails, [b"MAIL FROM:<bad@x.example>", b"MAIL FROM:<bad@x.example>",
                                 b"MAIL FROM:<ok@y.example>", b"MAIL FROM:<a@x.example>"])

    def test_refused_ehlo_keeps_the_transaction_and_the_name(self):
        rec = self.start_recorder(refuse_helo=b"bad_host")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_recipients 2"])
        c = self.greet(gate.port, ehlo="good.test")
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r1@test.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r2@test.example>").code, 250)
        self.assertEqual(c.cmd("EHLO bad_host").code, 501)
        # the MTA's transaction is still open with two recipients
        r = c.cmd("RCPT TO:<r3@test.example>")
        self.assertEqual(r.raw, b"452 4.5.3 Error: too many recipients\r\n")
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(MSG + b".\r\n")
        self.assertEqual(c.read_reply().code, 250)
        c.cmd("QUIT")
        msgs = rec.wait_messages(1)
        self.assertEqual(len(msgs[0].rcpts), 2)
        rejects = [l for l in gate.log_lines() if " reject " in l]
        self.assertTrue(rejects and all("helo=good.test" in l for l in rejects), rejects)
        # an accepted EHLO does reset it: a new transaction, judged afresh
        c2 = self.greet(gate.port)
        self.assertEqual(c2.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c2.cmd("RCPT TO:<r1@test.example>").code, 250)
        self.assertEqual(c2.cmd("EHLO again.test").code, 250)
        self.assertEqual(c2.cmd("RCPT TO:<r2@test.example>").raw[:9], b"503 5.5.1")
        c2.cmd("QUIT")

    def test_data_after_recipients_refused_for_syntax(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:bad\r\nDATA\r\n")
        rs = c.read_replies(3)
        self.assertEqual([r.raw[:9] for r in rs], [b"250 2.1.0", b"501 5.1.3", b"554 5.5.1"], rs)
        c.cmd("QUIT")
        self.assertFalse(any(cmd.upper().startswith(b"DATA") for cmd in rec.all_commands()))

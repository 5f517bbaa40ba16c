"""Session edges: max_sessions, half-closing clients, bare-LF command lines,
commands smtpgate never relays, AUTH names in the log, and a session going
on after smtpgate refused a message mid-stream."""

import base64
import socket
import time

from harness import GateTestCase, SMTPClient, wait_until

MSG = b"Subject: edge\r\n\r\nbody\r\n"


class SessionEdgeTest(GateTestCase):

    def test_max_sessions(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_sessions 2"])
        a = self.greet(gate.port)
        b = self.greet(gate.port)
        c = SMTPClient(gate.port, timeout=5)
        self.addCleanup(c.close)
        r = c.read_reply()
        self.assertTrue(r.raw.startswith(b"421 4.3.2"), r)
        got, closed = c.read_until_close(timeout=5)
        self.assertTrue(closed)
        self.assertEqual(len(rec.conns), 2, "the refused session reached the MTA")
        self.assertTrue(wait_until(lambda: any(l.startswith("refuse_max_sessions") for l in gate.log_lines()), 5))
        line = [l for l in gate.log_lines() if l.startswith("refuse_max_sessions")][0]
        self.assertIn("ip=127.0.0.1 listener=127.0.0.1:%d" % gate.port, line)
        a.cmd("QUIT")
        # a slot is free again
        self.assertTrue(self._eventually_served(gate.port))
        b.cmd("QUIT")

    def _eventually_served(self, port):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            c = SMTPClient(port, timeout=5)
            try:
                if c.read_reply().code == 220:
                    return True
            finally:
                c.close()
            time.sleep(0.1)
        return False

    def test_half_closed_client_gets_every_reply(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        s = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"EHLO x\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        buf = b""
        while buf.count(b"\r\n354 ") == 0 and not buf.startswith(b"354"):
            d = s.recv(65536)
            self.assertTrue(d, buf)
            buf += d
        s.sendall(MSG + b".\r\nQUIT\r\n")
        s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        self.assertIn(b"\r\n250 2.0.0 Ok: queued as", buf)
        self.assertTrue(buf.endswith(b"221 2.0.0 Bye\r\n"), buf[-200:])
        self.assertEqual([m.raw for m in rec.wait_messages(1)], [MSG])

    def test_half_closed_mid_data_sends_no_message(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(MSG)                       # no final dot
        c.sock.shutdown(socket.SHUT_WR)
        got, closed = c.read_until_close(timeout=10)
        self.assertTrue(closed)
        self.assertNotIn(b"250", got)
        rec.wait_all_closed()
        self.assertEqual(rec.messages(), [])

    def test_bare_lf_ends_command_lines(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = SMTPClient(gate.port, timeout=10)
        self.addCleanup(c.close)
        self.assertEqual(c.read_reply().code, 220)
        c.send(b"EHLO lf.example\nMAIL FROM:<a@x.example>\nRCPT TO:<b@test.example>\nDATA\n")
        self.assertEqual([r.code for r in c.read_replies(4)], [250, 250, 250, 354])
        c.send(MSG + b".\r\n")
        self.assertEqual(c.read_reply().code, 250)
        # relayed to the MTA with CRLF
        self.assertIn(b"EHLO lf.example", rec.all_commands())

    def test_commands_never_relayed(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.greet(gate.port)
        for line in ("XCLIENT ADDR=1.2.3.4", "xforward NAME=spoof", "BDAT 10 LAST", "STARTTLS"):
            r = c.cmd(line)
            self.assertEqual(r.code, 502, "%s: %r" % (line, r))
        self.assertEqual(c.cmd("NOOP").code, 250)
        verbs = [cmd.split(b" ")[0].upper() for cmd in rec.all_commands()]
        for v in (b"XCLIENT", b"XFORWARD", b"BDAT", b"STARTTLS"):
            self.assertNotIn(v, verbs)

    def test_auth_user_logged_never_password(self):
        rec = self.start_recorder(auth=True)
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.greet(gate.port)
        plain = base64.b64encode(b"\0alice\0good").decode()
        self.assertEqual(c.cmd("AUTH PLAIN " + plain).code, 235)
        c.cmd("QUIT")
        c2 = self.greet(gate.port)
        self.assertEqual(c2.cmd("AUTH LOGIN").code, 334)
        self.assertEqual(c2.cmd(base64.b64encode(b"bob").decode()).code, 334)
        self.assertEqual(c2.cmd(base64.b64encode(b"wrong-secret").decode()).code, 535)
        self.assertEqual(c2.cmd("NOOP").code, 250)
        c2.cmd("QUIT")
        ev = gate.wait_event("auth", n=2)
        got = sorted((e.get("user"), e.get("result")) for e in ev)
        self.assertEqual(got, [("alice", "ok"), ("bob", "failed")], ev)
        log = gate.log_text()
        for secret in ("good", "wrong-secret", plain, base64.b64encode(b"wrong-secret").decode()):
            self.assertNotIn(secret, log)

    def test_session_goes_on_after_refused_body(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_message_size 1K"])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n.\r\n")
        r = c.read_reply()
        self.assertTrue(r.raw.startswith(b"552 5.3.4"), r)
        # the same session delivers its next message
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<b@test.example>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        self.assertEqual(c.cmd(MSG.decode() + ".").code, 250)
        self.assertEqual([m.raw for m in rec.wait_messages(1)], [MSG])
        # the replayed EHLO carried the client's name to the new connection
        self.assertEqual(rec.all_commands().count(b"EHLO client.test"), 2)

    def test_authenticated_session_closed_after_refused_body(self):
        rec = self.start_recorder(auth=True)
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_message_size 1K"])
        c = self.greet(gate.port)
        plain = base64.b64encode(b"\0alice\0good").decode()
        self.assertEqual(c.cmd("AUTH PLAIN " + plain).code, 235)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(b"x" * 5000 + b"\r\n.\r\n")
        self.assertTrue(c.read_reply().raw.startswith(b"552 5.3.4"))
        r = c.read_reply()
        self.assertTrue(r.raw.startswith(b"421 4.7.0"), r)
        got, closed = c.read_until_close(timeout=5)
        self.assertTrue(closed)
        self.assertEqual(rec.messages(), [])


class XclientToSinkTest(GateTestCase):
    """smtp-sink answers XCLIENT with 250, Postfix with a new 220: both work.
    (smtp-sink takes only NAME and HELO from XCLIENT, so the address itself
    is checked against Postfix in test_forwarding.)"""

    def test_xclient_250_keeps_first_banner(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port], forward="xclient",
                             listen=["proxy_protocol on"])
        c = SMTPClient(gate.port, timeout=10)
        self.addCleanup(c.close)
        c.send(b"PROXY TCP4 203.0.113.9 127.0.0.1 4242 25\r\n")
        r = c.read_reply()
        self.assertEqual(r.code, 220, r)
        self.assertIn(b"smtp-sink", r.raw)
        self.assertEqual(c.cmd("EHLO client.test").code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<b@test.example>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        self.assertEqual(c.cmd(MSG.decode() + ".").code, 250)
        self.assertEqual(sink.wait_count(1), 1)


class MessageLogTest(GateTestCase):

    def test_multiline_dot_reply_logs_its_last_line(self):
        """MTAs put the queue id on the last line of a multi-line reply."""
        rec = self.start_recorder(dot_reply="250-2.0.0 first line\r\n250 2.0.0 Ok: queued as QID42")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(b"Subject: m\r\n\r\nbody\r\n.\r\n")
        r = c.read_reply()
        self.assertEqual(r.raw, b"250-2.0.0 first line\r\n250 2.0.0 Ok: queued as QID42\r\n")
        ev = gate.wait_event("message")
        self.assertEqual(ev[0].get("reply"), "250 2.0.0 Ok: queued as QID42", ev)

"""Hostile and broken input, broken peers, SMTP smuggling, PROXY headers, logs."""

import json
import socket
import struct
import time

from harness import (GateTestCase, RawMTA, SMTPClient, free_port, wait_until)

BODY = b"Subject: test\r\n\r\nhello\r\n"


def proxy_v2(src, dst, sport, dport):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if ":" in src:
        fam = 0x21  # TCP over IPv6
        addr = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
                + struct.pack("!HH", sport, dport))
    else:
        fam = 0x11  # TCP over IPv4
        addr = (socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport))
    return sig + bytes([0x21, fam]) + struct.pack("!H", len(addr)) + addr


class CommandLineTest(GateTestCase):
    """Command syntax limits: answered by smtpgate, never relayed."""

    def setUp(self):
        super().setUp()
        self.rec = self.start_recorder()
        self.gate = self.gate_for(["127.0.0.1:%d" % self.rec.port])
        self.c = self.greet(self.gate.port)

    def _assert_not_relayed(self, marker):
        time.sleep(0.2)
        cmds = self.rec.all_commands()
        self.assertFalse([x for x in cmds if marker in x], cmds)

    def test_overlong_line_5000(self):
        self.c.send(b"NOOP " + b"A" * 5000 + b"\r\nNOOP\r\n")
        r = self.c.read_replies(2)
        self.assertTrue(r[0].last.startswith("500 5.5.2"), r[0])
        self.assertEqual(r[1].code, 250, r[1])
        # the rest of the long line was discarded, not taken as commands
        self.assertEqual(self.c.cmd("QUIT").code, 221)
        self._assert_not_relayed(b"AAAA")

    def test_overlong_line_100k(self):
        self.c.send(b"MAIL FROM:<a@x.example> " + b"X=" + b"B" * 100000 + b"\r\nNOOP\r\n")
        r = self.c.read_replies(2, timeout=15)
        self.assertTrue(r[0].last.startswith("500 5.5.2"), r[0])
        self.assertEqual(r[1].code, 250, r[1])
        self._assert_not_relayed(b"BBBB")

    def test_helo_600_bytes(self):
        r = self.c.cmd(b"HELO " + b"h" * 595)
        self.assertTrue(r.last.startswith("500 5.5.2"), r)
        self.assertEqual(self.c.cmd("EHLO ok.test").code, 250)
        self._assert_not_relayed(b"hhhh")

    def test_nul_in_command(self):
        r = self.c.cmd(b"NOOP a\x00b")
        self.assertTrue(r.last.startswith("500 5.5.2"), r)
        self.assertEqual(self.c.cmd("NOOP").code, 250)
        r = self.c.cmd(b"MAIL FROM:<a\x00@x.example>")
        self.assertTrue(r.last.startswith("500 5.5.2"), r)
        self._assert_not_relayed(b"\x00")

    def test_bare_cr_in_command(self):
        r = self.c.cmd(b"NOOP a\rRSET")
        self.assertTrue(r.last.startswith("500 5.5.2"), r)
        self.assertEqual(self.c.cmd("NOOP").code, 250)
        r = self.c.cmd(b"MAIL FROM:<a@x.example>\rRCPT TO:<b@test.example>")
        self.assertTrue(r.last.startswith("500 5.5.2"), r)
        self._assert_not_relayed(b"\r")


class TimeoutsAndPeersTest(GateTestCase):

    def test_pregreet_talker_refused(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], listen=["pregreet 1s"])
        c = self.client(gate.port)
        c.send(b"EHLO early.test\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\n"
               b"DATA\r\n" + BODY + b".\r\n")
        r = c.read_reply(timeout=5)
        self.assertTrue(r.last.startswith("554 5.7.1"), r)
        rest, closed = c.read_until_close(timeout=5)
        self.assertTrue(closed, "connection not closed after pregreet refusal")
        self.assertNotIn(b"220", c.received.split(b"\r\n")[0])
        self.assertNotIn(b"250", rest)
        time.sleep(0.3)
        self.assertEqual(rec.messages(), [])
        self.assertFalse([x for x in rec.all_commands() if b"early.test" in x or b"MAIL" in x])

    def test_pregreet_patient_client_served(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], listen=["pregreet 1s"])
        c = self.client(gate.port)
        t0 = time.monotonic()
        r = c.read_reply(timeout=5)
        self.assertEqual(r.last, rec.banner)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertEqual(c.cmd("EHLO ok.test").code, 250)

    def test_idle_command_timeout(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["timeout command 2s"])
        c = self.greet(gate.port)
        t0 = time.monotonic()
        r = c.read_reply(timeout=10)
        took = time.monotonic() - t0
        self.assertTrue(r.last.startswith("421 4.4.2"), r)
        self.assertGreater(took, 1.5)
        self.assertLess(took, 6)
        _, closed = c.read_until_close(timeout=5)
        self.assertTrue(closed)

    def test_data_timeout_mid_data(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port],
                             globals_=["timeout command 10s", "timeout data 2s"])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(b"Subject: stalled\r\n\r\npartial line")
        r = c.read_reply(timeout=12)
        self.assertTrue(r.last.startswith("421"), r)
        _, closed = c.read_until_close(timeout=5)
        self.assertTrue(closed)
        self.assertTrue(rec.wait_all_closed(10), "upstream session not closed")
        self.assertEqual(rec.messages(), [])

    def test_mta_down(self):
        dead = free_port()
        gate = self.gate_for(["127.0.0.1:%d" % dead])
        c = self.client(gate.port)
        r = c.read_reply(timeout=10)
        self.assertTrue(r.last.startswith("421 4.3.2"), r)
        _, closed = c.read_until_close(timeout=5)
        self.assertTrue(closed)

    def test_mta_no_banner(self):
        """An MTA that accepts but never greets: the client gets a 421 (the
        connect timeout or the command timeout), never a hang."""
        rec = self.start_recorder(mode="no_banner")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], connect_timeout="2s",
                             globals_=["timeout command 3s"])
        c = self.client(gate.port)
        r = c.read_reply(timeout=15)
        self.assertTrue(r.last.startswith("421"), r)
        _, closed = c.read_until_close(timeout=5)
        self.assertTrue(closed)

    def test_failover(self):
        dead = free_port()
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % dead, "127.0.0.1:%d" % rec.port])
        c = self.client(gate.port)
        self.assertEqual(c.read_reply(timeout=10).last, rec.banner)
        self.assertEqual(c.cmd("EHLO f.test").code, 250)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(BODY + b".\r\n")
        self.assertEqual(c.read_reply().last, rec.dot_reply)
        self.assertEqual(len(rec.wait_messages(1)), 1)
        self.assertEqual(rec.messages()[0].content, BODY)

    def test_mta_drops_mid_data(self):
        rec = self.start_recorder(mode="drop_in_data")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        try:
            c.send(b"Subject: dropped\r\n\r\nfirst part\r\n")
            time.sleep(0.5)
            c.send(b"second part\r\n.\r\n")
        except OSError:
            pass
        try:
            r = c.read_reply(timeout=10)
        except EOFError:
            self.fail("connection closed without a 421; got %r" % c.received)
        self.assertTrue(r.last.startswith("421 4.4.2"), r)
        rest, closed = c.read_until_close(timeout=5)
        self.assertTrue(closed)
        self.assertNotIn(b"\r\n250 ", b"\r\n" + c.received.split(b"354 ", 1)[1])

    def test_mta_stalls_on_final_dot(self):
        rec = self.start_recorder(mode="stall_dot")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port],
                             globals_=["timeout command 3s", "timeout data 3s"])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(BODY + b".\r\n")
        try:
            r = c.read_reply(timeout=20)
        except EOFError:
            self.fail("connection closed without a 421; got %r" % c.received)
        self.assertTrue(r.last.startswith("421"), r)
        self.assertNotIn(b"\r\n250 ", b"\r\n" + c.received.split(b"354 ", 1)[1])

    def test_client_vanishes_mid_data(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(b"Subject: vanish\r\n\r\nsome text\r\n")
        time.sleep(0.3)
        c.close()
        self.assertTrue(rec.wait_all_closed(10), "upstream connection left open")
        self.assertEqual(rec.messages(), [])
        self.assertTrue(any(x.closed_mid_data for x in rec.conns),
                        "the MTA did not see the DATA phase cut short")
        close = gate.wait_event("close")
        self.assertEqual([e.get("messages") for e in close], ["0"])

    def test_max_message_size_body(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_message_size 1K"])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        body = b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 50   # ~5 KB
        c.send(body + b".\r\n")
        r = c.read_reply(timeout=10)
        self.assertTrue(r.last.startswith("552 5.3.4"), r)
        time.sleep(0.5)
        self.assertEqual(rec.messages(), [])
        self.assertNotIn(b"250 2.0.0", c.received)

    def test_max_message_size_small_body_passes(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_message_size 1K"])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        body = b"Subject: small\r\n\r\n" + (b"y" * 48 + b"\r\n") * 10
        c.send(body + b".\r\n")
        self.assertEqual(c.read_reply().last, rec.dot_reply)
        self.assertEqual([m.content for m in rec.wait_messages(1)], [body])

    def test_mail_size_param_over_limit(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["max_message_size 1K"])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example> SIZE=999999\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        r = c.read_replies(3)
        self.assertTrue(r[0].last.startswith("552 5.3.4"), r)
        self.assertTrue(r[1].last.startswith("503 5.5.1"), r)
        self.assertTrue(r[2].last.startswith("503 5.5.1"), r)
        # a SIZE within the limit goes through
        r = c.cmd("MAIL FROM:<a@x.example> SIZE=500")
        self.assertEqual(r.code, 250, r)
        time.sleep(0.2)
        cmds = rec.all_commands()
        self.assertFalse([x for x in cmds if b"999999" in x], cmds)
        self.assertFalse([x for x in cmds if x.upper().startswith((b"RCPT", b"DATA"))], cmds)


# --------------------------------------------------------------------------
# SMTP smuggling (CVE-2023-51764 class)

PREFIX = b"Subject: smuggle\r\n\r\nfirst line"
SMUGGLED = (b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<victim@test.example>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled body\r\n")
SEPARATORS = {
    "lf_dot_lf": b"\n.\n",
    "cr_dot_cr": b"\r.\r",
    "lf_dot_crlf": b"\n.\r\n",
    "crlf_dot_lf": b"\r\n.\n",
    "crlf_dot_cr": b"\r\n.\r",
}


class SmugglingTest(GateTestCase):

    def _run(self, mode, sep):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port],
                             globals_=["bare_newline %s" % mode])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(PREFIX + sep + SMUGGLED + b".\r\n")
        r = c.read_reply(timeout=10)
        # exactly one reply for the one message: the next is QUIT's
        q = c.cmd("QUIT")
        self.assertEqual(q.code, 221, "extra reply after the message: %r" % q)
        rec.wait_all_closed(5)
        msgs = rec.messages()
        cmds = rec.all_commands()
        self.assertFalse([x for x in cmds if b"evil@evil.example" in x],
                         "smuggled command reached the MTA as a command: %r" % cmds)
        return r, msgs

    def _normalize(self, sep):
        r, msgs = self._run("normalize", sep)
        self.assertEqual(len(msgs), 1, "MTA received %d messages" % len(msgs))
        self.assertEqual(r.code, 250, r)
        self.assertEqual(msgs[0].raw, PREFIX + b"\r\n..\r\n" + SMUGGLED)
        self.assertEqual(msgs[0].content, PREFIX + b"\r\n.\r\n" + SMUGGLED)

    def _reject(self, sep):
        r, msgs = self._run("reject", sep)
        self.assertTrue(r.last.startswith("550 5.5.2"), r)
        self.assertEqual(msgs, [], "MTA received a message smtpgate rejected")

    def _allow(self, sep):
        r, msgs = self._run("allow", sep)
        self.assertEqual(len(msgs), 1, "MTA received %d messages" % len(msgs))
        self.assertEqual(r.code, 250, r)
        self.assertEqual(msgs[0].raw, PREFIX + sep + SMUGGLED)

    def test_normalize_is_default(self):
        """Without a bare_newline line, <LF>.<LF> is normalized."""
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(PREFIX + b"\n.\n" + SMUGGLED + b".\r\n")
        self.assertEqual(c.read_reply().last, rec.dot_reply)
        self.assertEqual(c.cmd("QUIT").code, 221)
        msgs = rec.wait_messages(1)
        self.assertEqual([m.raw for m in msgs], [PREFIX + b"\r\n..\r\n" + SMUGGLED])

    def test_normalize_bare_newlines_in_body(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["bare_newline normalize"])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(b"Subject: n\r\n\r\na\nb\rc\r\n.d\n.e\r\n.\r\n")
        self.assertEqual(c.read_reply().last, rec.dot_reply)
        msgs = rec.wait_messages(1)
        self.assertEqual([m.raw for m in msgs],
                         [b"Subject: n\r\n\r\na\r\nb\r\nc\r\n.d\r\n..e\r\n"])


def _make(kind, name, sep):
    def t(self):
        getattr(self, "_" + kind)(sep)
    t.__name__ = "test_%s_%s" % (kind, name)
    t.__doc__ = "bare_newline %s with %r" % (kind, sep)
    return t


for _kind in ("normalize", "reject", "allow"):
    for _name, _sep in SEPARATORS.items():
        _t = _make(_kind, _name, _sep)
        setattr(SmugglingTest, _t.__name__, _t)


# --------------------------------------------------------------------------
# PROXY protocol listener

class ProxyListenerTest(GateTestCase):

    def setUp(self):
        super().setUp()
        self.rec = self.start_recorder()
        self.gate = self.gate_for(["127.0.0.1:%d" % self.rec.port], listen=["proxy_protocol on"])

    def _posed(self, header, ip):
        c = self.client(self.gate.port)
        c.send(header)
        self.assertEqual(c.read_reply(timeout=10).last, self.rec.banner)
        self.assertEqual(c.cmd("QUIT").code, 221)
        ev = self.gate.wait_event("connect", pred=lambda e: e.get("ip") == ip)
        self.assertTrue(ev, "no connect ip=%s in log:\n%s" % (ip, self.gate.log_text()))

    def test_v1_ipv4(self):
        self._posed(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n", "203.0.113.7")

    def test_v1_ipv6(self):
        self._posed(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n", "2001:db8::7")

    def test_v2_ipv4(self):
        self._posed(proxy_v2("198.51.100.23", "192.0.2.1", 40001, 25), "198.51.100.23")

    def test_v2_ipv6(self):
        self._posed(proxy_v2("2001:db8::23", "2001:db8::1", 40002, 25), "2001:db8::23")

    def _closed_without_banner(self, data):
        c = self.client(self.gate.port)
        c.send(data)
        got, closed = c.read_until_close(timeout=10)
        self.assertTrue(closed, "connection left open after %r" % data)
        self.assertFalse(c.received.startswith(b"220"), c.received)
        self.assertNotIn(b"250", c.received)

    def test_missing_header(self):
        self._closed_without_banner(b"EHLO nohdr.test\r\n")

    def test_malformed_v1(self):
        self._closed_without_banner(b"PROXY TCP4 999.0.113.7 192.0.2.1 40000 25\r\n")

    def test_malformed_v1_garbage(self):
        self._closed_without_banner(b"PROXY FOO bar\r\n")

    def test_malformed_v2(self):
        hdr = bytearray(proxy_v2("198.51.100.23", "192.0.2.1", 40001, 25))
        hdr[12] = 0x25      # version 2, command 5: invalid
        self._closed_without_banner(bytes(hdr))


# --------------------------------------------------------------------------
# Log injection

ESC_HELO = b"evil\x1b[2J\x1b[31mred\x1b]0;title\x07\x7f"
QUOTE_HELO = b'q" ip=6.6.6.6 injected="y'

# With max_recipients 1 every second RCPT is refused, so each transaction
# produces a reject line that carries the session's HELO, sender and rcpt.
INJECT = [
    b"EHLO " + QUOTE_HELO,
    b"MAIL FROM:<a@x.example>",
    b"RCPT TO:<b@test.example>",
    b"RCPT TO:<c@test.example>",
    b"RSET",
    b"HELO x\rsession=FORGED1 connect ip=6.6.6.6 port=1 listener=x",
    b"HELO " + ESC_HELO,
    b"MAIL FROM:<a\x1b[0m@evil.example>",
    b"RCPT TO:<b\x1b[1m@test.example>",
    b"XYZZY \x1b]0;pwned\x07\x7f\x08\x08",
    b"MAIL FROM:<a@x.example>",
    b"RCPT TO:<b@test.example>",
    b"RCPT TO:<d@test.example>",
]


class LogInjectionTest(GateTestCase):

    def _session(self, port, rec):
        c = self.client(port)
        c.read_reply()
        for line in INJECT:
            c.send(line + b"\r\n")
            c.read_reply()
        c.send(b"DATA\r\n")
        r = c.read_reply()
        if r.code == 354:
            c.send(b"Subject: x\r\n\r\nline\rsession=FORGED2 connect ip=6.6.6.7\r\n"
                   b"\x1b[2J\r\n.\r\n")
            c.read_reply()
        self.assertEqual(c.cmd("QUIT").code, 221)

    def _gate(self, fmt):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], log="stderr " + fmt,
                             globals_=["max_recipients 1"])
        self._session(gate.port, rec)
        gate.wait_event("close", fmt=fmt)
        gate.stop()
        raw = gate.log_bytes()
        ctl = sorted({b for b in raw if (b < 0x20 and b != 0x0a) or b == 0x7f})
        self.assertEqual(ctl, [], "raw control bytes in the log:\n%r" % raw[-3000:])
        return gate

    def test_text_log(self):
        gate = self._gate("text")
        for line in gate.log_lines():
            self.assertFalse(line.startswith("session=FORGED"), line)
        evs = gate.events()
        for e in evs:
            self.assertNotIn("injected", e, e)
            if e.get("event") == "connect":
                self.assertEqual(e.get("ip"), "127.0.0.1", e)
        self.assertEqual(len(gate.events("connect")), 1, gate.log_text())
        helos = [e.get("helo") for e in gate.events("reject")]
        # the hostile values did reach the log (escaped), so this test tests something
        self.assertIn(QUOTE_HELO.decode(), helos, gate.log_text())
        self.assertTrue([h for h in helos if h and h.startswith("evil")], gate.log_text())

    def test_json_log(self):
        gate = self._gate("json")
        objs = []
        for line in gate.log_lines():
            try:
                objs.append(json.loads(line))
            except ValueError:
                self.fail("not JSON: %r" % line)
        conns = [o for o in objs if o.get("event") == "connect"]
        self.assertEqual(len(conns), 1, objs)
        self.assertEqual(conns[0].get("ip"), "127.0.0.1")
        for o in objs:
            self.assertNotIn("injected", o)
            self.assertFalse(str(o.get("session", "")).startswith("FORGED"), o)
        helos = [o.get("helo") for o in objs if o.get("event") == "reject"]
        self.assertIn(QUOTE_HELO.decode(), helos, objs)
        # JSON escapes control characters; decoded, the value is the client's
        self.assertIn(ESC_HELO.decode("latin-1"), helos, objs)


class Utf8LogTest(GateTestCase):

    def test_json_log_keeps_utf8_addresses(self):
        """SMTPUTF8 (RFC 6531) addresses appear in the JSON log as the
        characters they are; a byte that is not UTF-8 is still escaped."""
        rec = self.start_recorder(ehlo=["rec.test", "PIPELINING", "SMTPUTF8", "8BITMIME"])
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], log="stderr json")
        c = self.greet(gate.port)
        sender = "josé@exämple.org"
        self.assertEqual(c.cmd(("MAIL FROM:<%s> SMTPUTF8" % sender).encode("utf-8")).code, 250)
        self.assertEqual(c.cmd(b"RCPT TO:<b@test.example>").code, 250)
        self.assertEqual(c.cmd(b"DATA").code, 354)
        c.send(b"Subject: u\r\n\r\nx\r\n.\r\n")
        self.assertEqual(c.read_reply().code, 250)
        c.cmd(b"QUIT")
        ev = gate.wait_event("message", fmt="json")
        self.assertEqual(ev[0].get("sender"), sender, gate.log_text())
        for line in gate.log_lines():
            json.loads(line)

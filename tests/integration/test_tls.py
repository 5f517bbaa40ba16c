"""TLS: STARTTLS and implicit TLS toward clients, STARTTLS toward the MTA.

Real peers only: swaks, `openssl s_client`, Python's smtplib/ssl, smtp-sink,
the harness's recording MTA and a private Postfix offering STARTTLS.  The
certificates come from a throw-away PKI made with the openssl CLI (tlsutil.PKI:
a CA, a server certificate with SAN IP:127.0.0.1 and DNS:localhost).
"""

import os
import re
import smtplib
import socket
import subprocess
import ssl
import threading
import time
import unittest

from harness import (GateTestCase, PostfixError, run_binary, run_swaks, is_listening,
                     wait_until)
from tlsutil import (shared_pki, TLSPostfix, ehlo_keywords, implicit_client, read_tls_close,
                     s_client, starttls_wrap)

BODY = b"Subject: tls test\r\n\r\nhello over tls\r\n"
MSG = "Subject: tls test\r\n\r\nhello over tls\r\n"


def _closed_within(sock, timeout):
    """Read from sock until EOF/reset; return (closed, seconds, bytes)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    data = b""
    while True:
        rem = deadline - time.monotonic()
        if rem <= 0:
            return False, time.monotonic() - t0, data
        sock.settimeout(rem)
        try:
            d = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return False, time.monotonic() - t0, data
        except OSError:
            return True, time.monotonic() - t0, data
        if not d:
            return True, time.monotonic() - t0, data
        data += d


def _client_hello(ctx):
    """The bytes of a real ClientHello made by Python's ssl module."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


class TLSBase(GateTestCase):

    @classmethod
    def setUpClass(cls):
        cls.pki = shared_pki()

    def tls_gate(self, servers, mode, listen=(), globals_=(), tls_extra=(), **kw):
        g = [self.pki.tls_block(extra=tls_extra)] + list(globals_)
        return self.gate_for(servers, globals_=g, listen=["tls %s" % mode] + list(listen), **kw)

    def sink_gate(self, mode, **kw):
        sink = self.start_sink()
        gate = self.tls_gate(["127.0.0.1:%d" % sink.port], mode, **kw)
        return sink, gate

    def ctx(self):
        return self.pki.client_context()

    def starttls(self, c, hostname="localhost"):
        r = c.cmd("STARTTLS")
        self.assertEqual(r.last, "220 2.0.0 Ready to start TLS", r)
        self.assertEqual(c.buf, b"", "plaintext bytes after the 220 to STARTTLS: %r" % c.buf)
        starttls_wrap(c, self.ctx(), server_hostname=hostname)
        return c

    def send_message(self, c, rcpt="b@test.example"):
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode())
        self.assertEqual([x.code for x in c.read_replies(3)], [250, 250, 354])
        c.send(BODY + b".\r\n")
        r = c.read_reply(timeout=20)
        self.assertEqual(r.code, 250, r)
        return r


# ---------------------------------------------------------------------------

class ClientPeersTest(TLSBase):
    """Ordinary TLS clients through smtpgate into smtp-sink."""

    def _swaks(self, sink, gate, tlsflag):
        r = run_swaks(["--server", "127.0.0.1", "--port", str(gate.port),
                       "--from", "a@x.example", "--to", "b@test.example",
                       "--helo", "swaks.test", tlsflag, "--tls-verify",
                       "--tls-ca-path", self.pki.ca,
                       "--header", "Subject: swaks %s" % tlsflag,
                       "--timeout", "15"], timeout=40)
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + "\n--- gate log:\n"
                         + gate.log_text()[-2000:])
        self.assertEqual(sink.wait_count(1), 1, r.stdout[-3000:])
        # swaks marks lines sent/received under TLS with ~> / <~
        self.assertRegex(r.stdout, r"(?m)^ ~> EHLO swaks\.test")
        self.assertRegex(r.stdout, r"(?m)^<~  250 ")
        self.assertRegex(r.stdout, r"(?m)^ ~> QUIT")
        m = sink.messages()[0]
        self.assertIn(b"Subject: swaks %s" % tlsflag.encode(), m.body)
        return r.stdout

    def test_swaks_starttls(self):
        sink, gate = self.sink_gate("starttls")
        out = self._swaks(sink, gate, "--tls")
        self.assertRegex(out, r"(?m)^<-  220 2\.0\.0 Ready to start TLS")

    def test_swaks_implicit(self):
        sink, gate = self.sink_gate("implicit")
        out = self._swaks(sink, gate, "--tlsc")
        # the banner itself came inside TLS
        self.assertRegex(out, r"(?m)^<~  220 ")
        self.assertNotRegex(out, r"(?m)^<-  220 ")

    def test_s_client_starttls(self):
        sink, gate = self.sink_gate("starttls")
        _rc, out, err = s_client(gate.port, self.pki.ca, ["EHLO client.test", "QUIT"],
                                starttls=True)
        self.assertIn("Verify return code: 0 (ok)", out, out + err)
        after = out.split("Verify return code", 1)[1]
        self.assertRegex(after, r"(?m)^250[- ]", out)
        self.assertRegex(after, r"(?m)^221 ", out)
        # (s_client's exit status is not checked here: it is 1 when the
        # server closes without close_notify - test_close_notify_* covers that)

    def test_s_client_implicit(self):
        sink, gate = self.sink_gate("implicit")
        _rc, out, err = s_client(gate.port, self.pki.ca, ["EHLO client.test", "QUIT"])
        self.assertIn("Verify return code: 0 (ok)", out, out + err)
        after = out.split("Verify return code", 1)[1]
        self.assertRegex(after, r"(?m)^220 ", out)
        self.assertRegex(after, r"(?m)^250[- ]", out)
        self.assertRegex(after, r"(?m)^221 ", out)
        # no STARTTLS offered inside implicit TLS
        ehlo = [l for l in after.split("\n") if l.startswith("250")]
        self.assertFalse([l for l in ehlo if "STARTTLS" in l.upper()], ehlo)

    def _tls_ctx_strict_eof(self):
        ctx = self.ctx()
        ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
        return ctx

    def test_close_notify_after_quit_implicit(self):
        """After 221 the TLS session is closed properly (close_notify, RFC
        8446 6.1); OpenSSL 3 clients report a bare TCP close as an error."""
        sink, gate = self.sink_gate("implicit")
        c = implicit_client(gate.port, self._tls_ctx_strict_eof(), suppress_ragged_eofs=False)
        self.addCleanup(c.close)
        self.assertEqual(c.read_reply().code, 220)
        self.assertEqual(c.cmd("QUIT").code, 221)
        how, data = read_tls_close(c.sock)
        self.assertEqual(data, b"")
        self.assertEqual(how, "close_notify", "TLS connection ended by %s after 221" % how)

    def test_close_notify_after_quit_starttls(self):
        sink, gate = self.sink_gate("starttls")
        c = self.greet(gate.port)
        r = c.cmd("STARTTLS")
        self.assertEqual(r.code, 220, r)
        starttls_wrap(c, self._tls_ctx_strict_eof(), suppress_ragged_eofs=False)
        self.assertEqual(c.cmd("EHLO tls.test").code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)
        how, data = read_tls_close(c.sock)
        self.assertEqual(data, b"")
        self.assertEqual(how, "close_notify", "TLS connection ended by %s after 221" % how)

    def test_smtplib_starttls(self):
        sink, gate = self.sink_gate("starttls")
        with smtplib.SMTP("127.0.0.1", gate.port, timeout=15) as s:
            code, _ = s.ehlo("py.test")
            self.assertEqual(code, 250)
            self.assertTrue(s.has_extn("starttls"))
            code, msg = s.starttls(context=self.ctx())   # hostname 127.0.0.1: SAN IP checked
            self.assertEqual(code, 220, msg)
            self.assertIsInstance(s.sock, ssl.SSLSocket)
            s.ehlo("py.test")
            self.assertFalse(s.has_extn("starttls"), "STARTTLS offered again under TLS")
            refused = s.sendmail("a@x.example", ["b@test.example"], MSG)
            self.assertEqual(refused, {})
        self.assertEqual(sink.wait_count(1), 1)
        self.assertIn(b"hello over tls", sink.messages()[0].body)

    def test_smtplib_implicit(self):
        sink, gate = self.sink_gate("implicit")
        with smtplib.SMTP_SSL("127.0.0.1", gate.port, timeout=15, context=self.ctx()) as s:
            code, _ = s.ehlo("py.test")
            self.assertEqual(code, 250)
            self.assertFalse(s.has_extn("starttls"))
            refused = s.sendmail("a@x.example", ["b@test.example"], MSG)
            self.assertEqual(refused, {})
        self.assertEqual(sink.wait_count(1), 1)
        self.assertIn(b"hello over tls", sink.messages()[0].body)

    def test_log_tls_line(self):
        sink, gate = self.sink_gate("starttls")
        c = self.greet(gate.port)
        self.starttls(c)
        self.assertEqual(c.cmd("EHLO again.test").code, 250)
        self.send_message(c)
        self.assertEqual(c.cmd("QUIT").code, 221)
        ev = gate.wait_event("tls", timeout=5)
        self.assertTrue(ev, gate.log_text()[-3000:])
        self.assertEqual(ev[0].get("tls"), "TLSv1.3", ev)
        self.assertEqual(ev[0].get("tls"), c.sock.version())
        self.assertTrue(ev[0].get("cipher"), ev)
        self.assertEqual(ev[0].get("cipher"), c.sock.cipher()[0], ev)
        conn = gate.wait_event("connect", timeout=2)
        self.assertTrue(conn and conn[0].get("session") == ev[0].get("session"),
                        gate.log_text()[-2000:])

    def test_log_message_line_has_tls(self):
        """SPEC 4 (log example) and 3.4 ("the log ... can" say the client
        used TLS): the message line of a TLS session carries tls=VERSION."""
        sink, gate = self.sink_gate("starttls")
        c = self.greet(gate.port)
        self.starttls(c)
        self.assertEqual(c.cmd("EHLO again.test").code, 250)
        self.send_message(c)
        self.assertEqual(c.cmd("QUIT").code, 221)
        ev = gate.wait_event("message", timeout=5)
        self.assertTrue(ev, gate.log_text()[-3000:])
        self.assertEqual(ev[0].get("tls"), "TLSv1.3", [l for l in gate.log_lines()
                                                       if " message " in l])

    def test_protocols_tls12_only(self):
        sink, gate = self.sink_gate("implicit", tls_extra=["protocols TLSv1.2"])
        # a client that insists on TLS 1.3 cannot connect
        ctx13 = self.ctx()
        ctx13.minimum_version = ssl.TLSVersion.TLSv1_3
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            implicit_client(gate.port, ctx13).close()
        c = implicit_client(gate.port, self.ctx())
        self.addCleanup(c.close)
        self.assertEqual(c.sock.version(), "TLSv1.2")
        self.assertEqual(c.read_reply().code, 220)
        self.assertEqual(c.cmd("EHLO x.test").code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)
        ev = gate.wait_event("tls", timeout=5, pred=lambda e: e.get("tls") == "TLSv1.2")
        self.assertTrue(ev, gate.log_text()[-3000:])
        self.assertTrue(gate.proc.poll() is None, "smtpgate died")


# ---------------------------------------------------------------------------

class StartTLSProtocolTest(TLSBase):
    """The STARTTLS state machine, seen from a raw client and a recording MTA."""

    def test_pipelined_after_starttls_discarded(self):
        rec = self.start_recorder()
        gate = self.tls_gate(["127.0.0.1:%d" % rec.port], "starttls")
        c = self.client(gate.port)
        self.assertEqual(c.read_reply().code, 220)
        self.assertEqual(c.cmd("EHLO x").code, 250)
        c.send(b"STARTTLS\r\nNOOP\r\n")
        r = c.read_reply()
        self.assertEqual(r.last, "220 2.0.0 Ready to start TLS", r)
        self.assertEqual(c.buf, b"", "bytes after the 220 in plaintext: %r" % c.buf)
        try:
            starttls_wrap(c, self.ctx())
        except ssl.SSLError as e:
            self.fail("TLS handshake failed after pipelined NOOP (plaintext reply "
                      "in the way?): %s; log:\n%s" % (e, gate.log_text()[-2000:]))
        c.send(b"EHLO y\r\n")
        r = c.read_reply()
        self.assertEqual(r.code, 250, r)
        self.assertTrue(len(r.lines) > 1, "expected the multi-line EHLO reply, got %r" % r)
        # nothing else may come: no stray 250 for the NOOP
        with self.assertRaises((socket.timeout, TimeoutError),
                               msg="unexpected data after EHLO reply"):
            extra = c.read_reply(timeout=1.0)
            self.fail("stray reply after STARTTLS: %r" % extra)
        self.assertEqual(c.buf, b"")
        r = c.cmd("QUIT")
        self.assertEqual(r.code, 221, r)
        time.sleep(0.3)
        cmds = rec.all_commands()
        self.assertFalse([x for x in cmds if x.upper().startswith(b"NOOP")],
                         "the pipelined NOOP reached the MTA: %r" % cmds)
        self.assertFalse([x for x in cmds if x.upper().startswith(b"STARTTLS")], cmds)

    def test_tcp_close_without_close_notify_still_answered(self):
        """A client that pipelines and then drops TCP without close_notify
        gets its replies, as in plaintext (SMTP has its own end markers)."""
        sink, gate = self.sink_gate("implicit")
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = self.ctx().wrap_bio(inc, out, server_hostname="localhost")
        raw = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
        self.addCleanup(raw.close)
        got, sent, shaken, fin = b"", False, False, False
        deadline = time.monotonic() + 10
        while got.count(b"\r\n221 ") + got.startswith(b"221 ") == 0 and time.monotonic() < deadline:
            try:
                if not shaken:
                    obj.do_handshake()
                    shaken = True
                if shaken and not sent and b"\r\n" in got:
                    obj.write(b"EHLO x.test\r\nNOOP\r\nQUIT\r\n")
                    sent = True
                got += obj.read(65536)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                break
            pending = out.read()
            if pending:
                raw.sendall(pending)
                if sent and not fin:
                    raw.shutdown(socket.SHUT_WR)      # FIN right behind, no close_notify
                    fin = True
            d = raw.recv(65536)
            if not d:
                break
            inc.write(d)
            try:
                got += obj.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
        codes = [l[:3] for l in got.split(b"\r\n") if l[3:4] == b" "]
        self.assertEqual(codes, [b"220", b"250", b"250", b"221"], got)

    def test_mail_before_new_ehlo_after_starttls_refused(self):
        """RFC 3207 4.2: what the client said before TLS is forgotten.  The
        MTA still holds the plaintext EHLO name (anyone on the path could
        have written it), so MAIL or AUTH must wait for a new EHLO."""
        rec = self.start_recorder(auth=True)
        gate = self.tls_gate(["127.0.0.1:%d" % rec.port], "starttls")
        c = self.greet(gate.port, ehlo="forged-before-tls.test")
        self.starttls(c)
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").raw,
                         b"503 5.5.1 Error: send HELO/EHLO first\r\n")
        self.assertEqual(c.cmd("AUTH PLAIN AGEAZ29vZA==").code, 503)
        self.assertEqual(c.cmd("EHLO after-tls.test").code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)
        cmds = rec.all_commands()
        self.assertIn(b"EHLO after-tls.test", cmds)
        self.assertEqual([x for x in cmds if x.startswith(b"MAIL")], [b"MAIL FROM:<a@x.example>"])
        self.assertFalse([x for x in cmds if x.startswith(b"AUTH")], cmds)

    def test_ehlo_starttls_advertised_once(self):
        # the MTA advertises STARTTLS too: smtpgate's own is shown once
        rec = self.start_recorder(ehlo=["rec.test", "PIPELINING", "STARTTLS", "8BITMIME"])
        gate = self.tls_gate(["127.0.0.1:%d" % rec.port], "starttls")
        c = self.greet(gate.port)
        kws = ehlo_keywords(c.cmd("EHLO again.test"))
        self.assertEqual(kws.count("STARTTLS"), 1, kws)
        self.starttls(c)
        r = c.cmd("EHLO tls.test")
        self.assertEqual(r.code, 250, r)
        # RFC 3207 4.2: not offered again after the handshake
        self.assertNotIn("STARTTLS", ehlo_keywords(r), r)

    def test_starttls_twice_503(self):
        rec = self.start_recorder()
        gate = self.tls_gate(["127.0.0.1:%d" % rec.port], "starttls")
        c = self.greet(gate.port)
        self.starttls(c)
        self.assertEqual(c.cmd("EHLO tls.test").code, 250)
        r = c.cmd("STARTTLS")
        self.assertTrue(r.last.startswith("503 5.5.1"), r)
        # the session goes on under TLS
        self.assertEqual(c.cmd("NOOP").code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)
        time.sleep(0.2)
        self.assertFalse([x for x in rec.all_commands() if x.upper().startswith(b"STARTTLS")])

    def test_starttls_on_tls_none_502(self):
        rec = self.start_recorder(ehlo=["rec.test", "PIPELINING", "STARTTLS", "8BITMIME"])
        gate = self.tls_gate(["127.0.0.1:%d" % rec.port], "none")
        c = self.greet(gate.port)
        r = c.cmd("EHLO again.test")
        self.assertNotIn("STARTTLS", ehlo_keywords(r), r)
        r = c.cmd("STARTTLS")
        self.assertTrue(r.last.startswith("502 5.5.1"), r)
        self.assertEqual(c.cmd("NOOP").code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)
        time.sleep(0.2)
        self.assertFalse([x for x in rec.all_commands() if x.upper().startswith(b"STARTTLS")],
                         rec.all_commands())

    def test_auth_require_tls(self):
        sink, gate = self.sink_gate("starttls", listen=["auth require-tls"])
        c = self.client(gate.port)
        self.assertEqual(c.read_reply().code, 220)
        r = c.cmd("EHLO client.test")
        self.assertEqual(r.code, 250, r)
        kws = ehlo_keywords(r)
        self.assertNotIn("AUTH", kws, r)
        self.assertIn("STARTTLS", kws, r)
        r = c.cmd("AUTH PLAIN AHVzZXIAcGFzc3dvcmQ=")
        self.assertTrue(r.last.startswith("530 5.7.0"), r)
        self.starttls(c)
        r = c.cmd("EHLO client.test")
        self.assertEqual(r.code, 250, r)
        auth = [l for l in r.lines[1:] if l[4:].upper().startswith("AUTH")]
        self.assertEqual(len(auth), 1, r)
        self.assertEqual(auth[0][4:].split()[1:], ["PLAIN", "LOGIN"], r)
        self.assertEqual(c.cmd("QUIT").code, 221)
        self.assertNotIn("cGFzc3dvcmQ", gate.log_text())


# ---------------------------------------------------------------------------

class HandshakeFailureTest(TLSBase):
    """Clients that never finish (or never start) a handshake."""

    def test_handshake_stall_closed_after_command_timeout(self):
        rec = self.start_recorder()
        gate = self.tls_gate(["127.0.0.1:%d" % rec.port], "implicit",
                             globals_=["timeout command 2s"])
        silent = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
        self.addCleanup(silent.close)
        half = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
        self.addCleanup(half.close)
        hello = _client_hello(self.ctx())
        self.assertGreater(len(hello), 50)
        half.sendall(hello[:len(hello) // 2])
        results = {}

        def watch(name, s):
            results[name] = _closed_within(s, 8)

        ts = [threading.Thread(target=watch, args=(n, s))
              for n, s in (("silent", silent), ("half", half))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(12)
        summary = ", ".join("%s: closed=%s after %.1fs" % (n, results[n][0], results[n][1])
                            for n in ("silent", "half"))
        for name in ("silent", "half"):
            closed, took, data = results[name]
            self.assertTrue(closed, summary)
            self.assertLess(took, 4.5, "expected close ~2s (timeout command): " + summary)
            self.assertGreater(took, 1.0, "closed too early: " + summary)
            self.assertNotIn(b"220", data, name)
        self.assertIsNone(gate.proc.poll(), "smtpgate died")

    def test_starttls_handshake_stall_closed(self):
        rec = self.start_recorder()
        gate = self.tls_gate(["127.0.0.1:%d" % rec.port], "starttls",
                             globals_=["timeout command 2s"])
        c = self.greet(gate.port)
        r = c.cmd("STARTTLS")
        self.assertEqual(r.code, 220, r)
        closed, took, _ = _closed_within(c.sock, 8)
        self.assertTrue(closed, "not closed after %.1fs" % took)
        self.assertLess(took, 4.5, "expected close ~2s (timeout command), took %.1fs" % took)
        self.assertTrue(rec.wait_all_closed(5), "upstream session left open")

    def test_garbage_instead_of_client_hello(self):
        rec = self.start_recorder()
        gate = self.tls_gate(["127.0.0.1:%d" % rec.port], "implicit")
        s = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        closed, took, data = _closed_within(s, 6)
        self.assertTrue(closed, "garbage client not closed after %.1fs" % took)
        self.assertNotIn(b"220", data)
        self.assertIsNone(gate.proc.poll(), "smtpgate died")
        # the next, proper client is served
        c = implicit_client(gate.port, self.ctx())
        self.addCleanup(c.close)
        r = c.read_reply()
        self.assertEqual(r.last, rec.banner, r)
        self.assertEqual(c.cmd("EHLO good.test").code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)

    def test_garbage_after_starttls(self):
        rec = self.start_recorder()
        gate = self.tls_gate(["127.0.0.1:%d" % rec.port], "starttls")
        c = self.greet(gate.port)
        self.assertEqual(c.cmd("STARTTLS").code, 220)
        c.send(b"EHLO not-tls.test\r\nMAIL FROM:<a@x.example>\r\n")
        closed, _, data = _closed_within(c.sock, 6)
        self.assertTrue(closed)
        self.assertNotIn(b"250", data)
        self.assertIsNone(gate.proc.poll(), "smtpgate died")
        time.sleep(0.2)
        self.assertFalse([x for x in rec.all_commands() if b"not-tls" in x or b"MAIL" in x])
        c2 = self.greet(gate.port)
        self.starttls(c2)
        self.assertEqual(c2.cmd("EHLO good.test").code, 250)
        self.assertEqual(c2.cmd("QUIT").code, 221)


# ---------------------------------------------------------------------------

class ConfigTest(TLSBase):

    def _check(self, text):
        path = os.path.join(self.pki.dir, "cfg-%d.conf" % (abs(hash(text)) % 10**8))
        with open(path, "w") as f:
            f.write(text)
        r = run_binary(["-t", "-c", path])
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        return path, r.returncode, out

    def _lines(self, tls_lines, listen_tls="starttls"):
        return ("log stderr text\n"            # 1
                "tls {\n"                      # 2
                + "".join("    %s\n" % l for l in tls_lines) +
                "}\n"
                "upstream mta {\n"
                "    server 127.0.0.1:2525\n"
                "}\n"
                "listen 127.0.0.1:2526 {\n"
                "    upstream mta\n"
                "    tls %s\n"
                "}\n" % listen_tls)

    def _assert_error_in_tls_block(self, path, rc, out):
        self.assertEqual(rc, 1, out)
        m = re.search(r"(?m)^%s:(\d+): \S" % re.escape(path), out)
        self.assertTrue(m, "no FILE:LINE: message in: %r" % out)
        self.assertIn(int(m.group(1)), (2, 3, 4, 5), out)

    def test_good_tls_config_ok(self):
        path, rc, out = self._check(self._lines(["certificate %s" % self.pki.cert,
                                                 "key %s" % self.pki.key,
                                                 "protocols TLSv1.2 TLSv1.3",
                                                 'ciphers "HIGH:!aNULL"']))
        self.assertEqual(rc, 0, out)
        self.assertIn("%s: ok" % path, out)

    def test_encrypted_key_refused_without_a_prompt(self):
        """OpenSSL would ask for a passphrase (and wait on a terminal, which
        freezes a reload): an encrypted key is a plain config error."""
        enc = os.path.join(self.pki.dir, "encrypted.key")
        subprocess.run(["openssl", "pkey", "-in", self.pki.key, "-aes256", "-passout",
                        "pass:secret", "-out", enc], check=True, capture_output=True)
        path, rc, out = self._check(self._lines(["certificate %s" % self.pki.cert,
                                                 "key %s" % enc]))
        self._assert_error_in_tls_block(path, rc, out)
        # at the key line, not the block's
        self.assertIn("%s:4: tls: %s: the key is encrypted" % (path, enc), out)
        self.assertNotIn("pass phrase", out.lower())

    def test_missing_files(self):
        path, rc, out = self._check(self._lines(["certificate /nonexistent/cert.pem",
                                                 "key /nonexistent/key.pem"]))
        self._assert_error_in_tls_block(path, rc, out)

    def test_key_not_matching_cert(self):
        path, rc, out = self._check(self._lines(["certificate %s" % self.pki.cert,
                                                 "key %s" % self.pki.other_key]))
        self._assert_error_in_tls_block(path, rc, out)

    def test_tls_listener_without_tls_block(self):
        text = ("log stderr text\n"
                "upstream mta {\n"
                "    server 127.0.0.1:2525\n"
                "}\n"
                "listen 127.0.0.1:2526 {\n"
                "    upstream mta\n"
                "    tls implicit\n"
                "}\n")
        path, rc, out = self._check(text)
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"(?m)^%s:\d+: \S" % re.escape(path))

    def test_bad_tls_config_does_not_start(self):
        path, _, _ = self._check(self._lines(["certificate /nonexistent/cert.pem",
                                              "key /nonexistent/key.pem"]))
        r = run_binary(["-c", path], timeout=10)
        self.assertEqual(r.returncode, 1, r)


# ---------------------------------------------------------------------------

class UpstreamTLSTest(TLSBase):
    """STARTTLS toward a real Postfix offering our certificate.

    Besides Postfix's ordinary smtpd port, a third smtpd (`badname_port`)
    presents a certificate from the right CA that names neither 127.0.0.1
    nor localhost."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.badname_cert, cls.badname_key = cls.pki._leaf(
            "badname", "mx.other.example", "ca", san="DNS:mx.other.example,IP:127.0.0.2")
        os.chmod(cls.badname_key, 0o644)
        cls.pf = TLSPostfix(cls.pki, extra_smtpd={"badname": (cls.badname_cert,
                                                               cls.badname_key)})
        try:
            cls.pf.start()
            if not wait_until(lambda: is_listening(cls.pf.extra_ports["badname"]), 10):
                raise PostfixError("extra smtpd not listening")
        except (PostfixError, OSError) as e:
            cls.pf.cleanup()
            raise unittest.SkipTest("cannot start a private Postfix here: %s" % e)

    @classmethod
    def tearDownClass(cls):
        cls.pf.cleanup()

    def up_gate(self, port, upstream):
        return self.gate_for(["127.0.0.1:%d" % port], upstream=upstream, connect_timeout="5s")

    def _deliver(self, gate):
        c = self.client(gate.port, timeout=20)
        r = c.read_reply()
        self.assertEqual(r.code, 220, "%r; gate log:\n%s" % (r, gate.log_text()[-2000:]))
        r = c.cmd("EHLO client.test")
        self.assertEqual(r.code, 250, r)
        r = self.send_message(c)
        m = re.search(r"queued as ([0-9A-Za-z]+)", r.last)
        self.assertTrue(m, r)
        self.assertEqual(c.cmd("QUIT").code, 221)
        return m.group(1)

    def _smtpd_session_lines(self, qid):
        """The maillog lines of the smtpd session that received qid."""
        line = self.pf.wait_log(r"(\S+/smtpd\[\d+\]): %s: client=" % qid, timeout=15)
        self.assertTrue(line, self.pf.log_text()[-3000:])
        tag = line.group(1)
        lines = [l for l in self.pf.log_text().split("\n") if tag + ":" in l]
        idx = max(i for i, l in enumerate(lines) if "%s: client=" % qid in l)
        start = max([i for i, l in enumerate(lines[:idx]) if ": connect from " in l] or [0])
        return lines[start:idx + 1]

    def test_upstream_starttls_verified(self):
        gate = self.up_gate(self.pf.port, ["starttls on", "verify on", "ca %s" % self.pki.ca])
        qid = self._deliver(gate)
        sess = self._smtpd_session_lines(qid)
        self.assertTrue([l for l in sess if re.search(
            r"TLS connection established from \S*\[127\.0\.0\.1\]", l)],
            "no TLS in the smtpd session of %s:\n%s" % (qid, "\n".join(sess)))
        ev = gate.wait_event("upstream_tls", timeout=5)
        self.assertTrue(ev, gate.log_text()[-2000:])
        self.assertRegex(ev[0].get("tls", ""), r"^TLSv1\.[23]$", ev)
        self.assertFalse(gate.events("upstream_tls_error"), gate.log_text())
        self.assertTrue(self.pf.wait_log(r"%s: to=<b@test\.example>.*status=sent" % qid, 15))

    def test_upstream_starttls_wrong_ca(self):
        gate = self.up_gate(self.pf.port, ["starttls on", "verify on",
                                           "ca %s" % self.pki.other_ca])
        c = self.client(gate.port, timeout=20)
        r = c.read_reply(timeout=15)
        self.assertTrue(r.last.startswith("421 4.7.0"), r)
        _, closed = c.read_until_close(timeout=5)
        self.assertTrue(closed)
        ev = gate.wait_event("upstream_tls_error", timeout=5)
        self.assertTrue(ev, gate.log_text()[-2000:])
        line = [l for l in gate.log_lines() if " upstream_tls_error" in l][0]
        self.assertRegex(line, r"(?i)certificate|verif", line)
        self.assertFalse(gate.events("upstream_tls"), gate.log_text())

    def test_upstream_starttls_wrong_name(self):
        gate = self.up_gate(self.pf.extra_ports["badname"],
                            ["starttls on", "verify on", "ca %s" % self.pki.ca])
        c = self.client(gate.port, timeout=20)
        r = c.read_reply(timeout=15)
        self.assertTrue(r.last.startswith("421 4.7.0"), r)
        ev = gate.wait_event("upstream_tls_error", timeout=5)
        self.assertTrue(ev, gate.log_text()[-2000:])
        line = [l for l in gate.log_lines() if " upstream_tls_error" in l][0]
        self.assertRegex(line, r"(?i)mismatch|name|ip address|host", line)
        # control: the same smtpd is fine with verify off, so the refusal
        # above is the name check
        gate2 = self.up_gate(self.pf.extra_ports["badname"], ["starttls on", "verify off"])
        self._deliver(gate2)
        self.assertTrue(gate2.wait_event("upstream_tls", timeout=5), gate2.log_text())

    def test_upstream_tls_failure_gives_way_to_the_next_server(self):
        """One MTA with a bad certificate must not stop all mail: before
        the client's banner, a TLS failure moves on to the next server."""
        gate = self.gate_for(["127.0.0.1:%d" % self.pf.extra_ports["badname"],
                              "127.0.0.1:%d" % self.pf.port],
                             upstream=["starttls on", "verify on", "ca %s" % self.pki.ca],
                             connect_timeout="5s")
        qid = self._deliver(gate)
        self.assertTrue(self.pf.wait_log(r"%s: to=<b@test\.example>.*status=sent" % qid, 15))
        err = gate.wait_event("upstream_tls_error", timeout=5)
        self.assertEqual(err[0].get("server"), "127.0.0.1:%d" % self.pf.extra_ports["badname"], err)
        ok = gate.wait_event("upstream_tls", timeout=5)
        self.assertEqual(ok[0].get("server"), "127.0.0.1:%d" % self.pf.port, ok)

    def test_reconnect_after_refused_body_also_fails_over(self):
        """After a body refused mid-stream smtpgate reconnects, from the
        first server again: one that fails TLS must give way there too."""
        notls = self.start_recorder()          # offers no STARTTLS
        gate = self.gate_for(["127.0.0.1:%d" % notls.port, "127.0.0.1:%d" % self.pf.port],
                             upstream=["starttls on", "verify off"], connect_timeout="5s",
                             globals_=["max_message_size 1K"])
        c = self.client(gate.port, timeout=20)
        self.assertEqual(c.read_reply().code, 220)
        self.assertEqual(c.cmd("EHLO client.test").code, 250)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        c.send(b"x" * 998 + b"\r\n" + b"y" * 998 + b"\r\n.\r\n")
        r = c.read_reply(timeout=20)
        self.assertTrue(r.raw.startswith(b"552 5.3.4"), r)
        r = self.send_message(c)
        self.assertTrue(re.search(r"queued as ([0-9A-Za-z]+)", r.last), "%r\n%s" % (r, gate.log_text()[-2000:]))
        self.assertEqual(c.cmd("QUIT").code, 221)
        errs = [e.get("server") for e in gate.events("upstream_tls_error")]
        self.assertEqual(errs, ["127.0.0.1:%d" % notls.port] * 2, gate.log_text()[-2000:])

    def test_upstream_starttls_verify_off(self):
        # verify off: any certificate will do (here: one from an unknown CA)
        gate = self.up_gate(self.pf.port, ["starttls on", "verify off",
                                           "ca %s" % self.pki.other_ca])
        qid = self._deliver(gate)
        sess = self._smtpd_session_lines(qid)
        self.assertTrue([l for l in sess if "TLS connection established" in l],
                        "\n".join(sess))

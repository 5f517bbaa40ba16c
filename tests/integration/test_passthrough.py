"""Messages pass through smtpgate unchanged (swaks, smtplib, smtp-source)."""

import json
import os
import random
import re
import smtplib
import subprocess
import tempfile

from harness import (GateTestCase, SMTP_SOURCE, config_text, run_swaks, sink_view,
                     stuff, wait_until)


def big_body(size):
    """A realistic CRLF message of about `size` bytes with dot lines and 8-bit."""
    rnd = random.Random(size)
    parts = [b"From: a@x.example\r\nTo: b@test.example\r\nSubject: big\r\n\r\n"]
    total = len(parts[0])
    alphabet = bytes(range(0x20, 0x7f)) + bytes(range(0x80, 0x100))
    n = 0
    while total < size:
        n += 1
        if n % 97 == 0:
            line = b"." + bytes(rnd.choice(alphabet) for _ in range(30))
        elif n % 101 == 0:
            line = b"."
        else:
            line = bytes(rnd.choice(alphabet) for _ in range(76))
        parts.append(line + b"\r\n")
        total += len(line) + 2
    return b"".join(parts)


def fast_big_body(size):
    """Like big_body but built from a few random blocks (fast for 10 MB)."""
    block = big_body(64 * 1024)
    head, _, rest = block.partition(b"\r\n\r\n")
    out = [head + b"\r\n\r\n"]
    total = len(out[0])
    i = 0
    while total < size:
        out.append(rest)
        total += len(rest)
        i += 1
    return b"".join(out)


SPECIAL = (b"From: a@x.example\r\nTo: b@test.example\r\nSubject: special\r\n\r\n"
           b".leading dot\r\n..two dots\r\n.\r\n...\r\n"
           b"8-bit: \x80\x81\xfe\xff caf\xc3\xa9 \xe2\x82\xac\r\n"
           b"tab\there\r\n\r\n trailing space \r\n.end\r\n")


class PassthroughTest(GateTestCase):

    # -- byte-for-byte: the recording MTA sees exactly what the client sent
    def _smtplib_send(self, port, content, rcpts=("b@test.example",), timeout=60):
        with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
            s.ehlo("client.test")
            s.mail("a@x.example")
            for r in rcpts:
                code, msg = s.rcpt(r)
                self.assertEqual(code, 250, msg)
            code, msg = s.data(content)
            return code, msg

    def test_smtplib_10mb_byte_exact(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        content = fast_big_body(10 * 1024 * 1024)
        try:
            # 10 MB over loopback takes well under a second directly
            code, msg = self._smtplib_send(gate.port, content, timeout=20)
        except (smtplib.SMTPException, OSError) as e:
            self.fail("10 MB transfer through smtpgate stalled (%s); the MTA got %s of %d bytes;"
                      " MTA saw commands %r; smtpgate log:\n%s"
                      % (e, [c.data_bytes for c in rec.conns], len(stuff(content)),
                         [c.commands for c in rec.conns], gate.log_text()[-2000:]))
        self.assertEqual(code, 250)
        # the 250 the client got is the MTA's, verbatim
        self.assertEqual(b"%d %s" % (code, msg), rec.dot_reply.encode())
        msgs = rec.wait_messages(1)
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0].content, content, "message body changed in transit")
        self.assertEqual(msgs[0].raw, stuff(content))

    def test_smtplib_1mb_byte_exact(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        content = fast_big_body(1024 * 1024)
        try:
            code, msg = self._smtplib_send(gate.port, content, timeout=20)
        except (smtplib.SMTPException, OSError) as e:
            self.fail("1 MB transfer through smtpgate stalled (%s); the MTA got %s of %d bytes;"
                      " MTA saw commands %r; smtpgate log:\n%s"
                      % (e, [c.data_bytes for c in rec.conns], len(stuff(content)),
                         [c.commands for c in rec.conns], gate.log_text()[-2000:]))
        self.assertEqual(b"%d %s" % (code, msg), rec.dot_reply.encode())
        msgs = rec.wait_messages(1)
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0].raw, stuff(content))

    def test_smtplib_dot_and_8bit_byte_exact(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        code, msg = self._smtplib_send(gate.port, SPECIAL)
        self.assertEqual(b"%d %s" % (code, msg), rec.dot_reply.encode())
        msgs = rec.wait_messages(1)
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0].raw, stuff(SPECIAL))
        self.assertEqual(msgs[0].content, SPECIAL)

    def test_swaks_same_bytes_as_direct(self):
        """swaks through smtpgate delivers the same DATA bytes as swaks direct."""
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        with tempfile.NamedTemporaryFile(suffix=".eml", delete=False) as f:
            f.write(SPECIAL)
            path = f.name
        self.addCleanup(os.unlink, path)
        args = ["--from", "a@x.example", "--to", "b@test.example", "--data", "@" + path,
                "--ehlo", "client.test"]
        p_direct = run_swaks(["--server", "127.0.0.1:%d" % rec.port] + args)
        self.assertEqual(p_direct.returncode, 0, p_direct.stdout)
        p_gate = run_swaks(["--server", "127.0.0.1:%d" % gate.port] + args)
        self.assertEqual(p_gate.returncode, 0, p_gate.stdout)
        msgs = rec.wait_messages(2)
        self.assertEqual(len(msgs), 2)
        self.assertEqual(msgs[1].raw, msgs[0].raw)
        self.assertEqual(msgs[1].mail, msgs[0].mail)
        self.assertEqual(msgs[1].rcpts, msgs[0].rcpts)
        # swaks shows the MTA's final reply verbatim
        self.assertIn("<-  " + rec.dot_reply, p_gate.stdout)

    def test_swaks_to_sink(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port])
        with tempfile.NamedTemporaryFile(suffix=".eml", delete=False) as f:
            f.write(SPECIAL)
            path = f.name
        self.addCleanup(os.unlink, path)
        p = run_swaks(["--server", "127.0.0.1:%d" % gate.port, "--from", "a@x.example",
                       "--to", "b@test.example", "--data", "@" + path])
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("<-  250 2.0.0 Ok", p.stdout)
        self.assertEqual(sink.wait_count(1), 1)
        m = sink.messages()[0]
        self.assertEqual(m.mail, "<a@x.example>")
        self.assertEqual(m.rcpts, ["<b@test.example>"])
        # swaks appends one empty line to --data
        self.assertEqual(m.body, sink_view(SPECIAL + b"\r\n"))

    def test_10mb_to_sink(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port])
        content = fast_big_body(10 * 1024 * 1024)
        try:
            code, msg = self._smtplib_send(gate.port, content, timeout=20)
        except (smtplib.SMTPException, OSError) as e:
            self.fail("10 MB transfer through smtpgate to smtp-sink stalled: %s" % e)
        self.assertEqual((code, msg), (250, b"2.0.0 Ok"))
        self.assertEqual(sink.wait_count(1), 1)
        self.assertEqual(sink.messages()[0].body, sink_view(content))

    def test_1000_recipients(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port], globals_=["max_recipients 1000"])
        rcpts = ["r%04d@test.example" % i for i in range(1000)]
        code, msg = self._smtplib_send(gate.port, SPECIAL, rcpts)
        self.assertEqual(code, 250, msg)
        self.assertEqual(sink.wait_count(1), 1)
        m = sink.messages()[0]
        self.assertEqual(m.rcpts, ["<%s>" % r for r in rcpts])
        self.assertEqual(m.body, sink_view(SPECIAL))

    def test_smtp_source_200_parallel(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port])
        p = subprocess.run([SMTP_SOURCE, "-s", "200", "-m", "200", "-l", "2000", "-c",
                            "-f", "a@x.example", "-t", "b@test.example",
                            "127.0.0.1:%d" % gate.port],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                           errors="replace", text=True)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        self.assertNotIn("smtp-source: fatal", p.stdout)
        self.assertNotIn("warning", p.stdout)
        self.assertEqual(sink.wait_count(200, timeout=30), 200)
        closes = gate.wait_event("close", n=200, timeout=15)
        self.assertEqual(len(closes), 200)
        self.assertEqual(sum(int(c.get("messages", 0)) for c in closes), 200)

    # -- banner and EHLO
    def test_banner_relayed(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port])
        c = self.client(gate.port)
        self.assertEqual(c.read_reply().raw, rec.banner.encode() + b"\r\n")
        sink = self.start_sink()
        gate2 = self.gate_for(["127.0.0.1:%d" % sink.port])
        c2 = self.client(gate2.port)
        self.assertEqual(c2.read_reply().raw, b"220 smtp-sink ESMTP\r\n")

    def test_banner_replaced(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port],
                             listen=['banner "gate.test ESMTP front door"'])
        c = self.client(gate.port)
        r = c.read_reply()
        self.assertEqual(r.code, 220)
        self.assertEqual(len(r.lines), 1)
        self.assertTrue(r.lines[0].startswith("220 gate.test ESMTP front door"), r)
        self.assertNotIn(rec.token, r.raw.decode("latin-1"))
        # the session still works
        r = c.cmd("EHLO client.test")
        self.assertEqual(r.code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)

    def _ehlo_keywords(self, reply):
        return [l[4:].split(" ")[0].upper() for l in reply.lines[1:]]

    def test_ehlo_rewrite_sink(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port], globals_=["max_message_size 10M"])
        c = self.greet(gate.port)
        r = c.cmd("EHLO again.test")
        self.assertEqual(r.code, 250)
        kws = self._ehlo_keywords(r)
        for bad in ("XCLIENT", "XFORWARD", "CHUNKING", "BINARYMIME", "STARTTLS"):
            self.assertNotIn(bad, kws, r.lines)
        self.assertIn("PIPELINING", kws, r.lines)
        self.assertIn("8BITMIME", kws, r.lines)
        self.assertIn("ENHANCEDSTATUSCODES", kws, r.lines)
        # smtp-sink announces no SIZE: the lower of (unlimited, 10M) is 10M
        sizes = [l for l in r.lines[1:] if l[4:].upper().startswith("SIZE")]
        self.assertEqual([s[4:] for s in sizes], ["SIZE %d" % (10 * 1024 * 1024)], r.lines)

    def test_ehlo_rewrite_recorder(self):
        ehlo = ["rec.test", "PIPELINING", "SIZE 20000000", "STARTTLS", "XCLIENT NAME ADDR",
                "XFORWARD NAME ADDR", "CHUNKING", "BINARYMIME", "8BITMIME", "DSN"]
        for mms, expect in (("10M", 10 * 1024 * 1024), ("50M", 20000000)):
            with self.subTest(max_message_size=mms):
                rec = self.start_recorder(ehlo=ehlo)
                gate = self.gate_for(["127.0.0.1:%d" % rec.port],
                                     globals_=["max_message_size %s" % mms])
                c = self.client(gate.port)
                c.read_reply()
                r = c.cmd("EHLO client.test")
                kws = self._ehlo_keywords(r)
                for bad in ("XCLIENT", "XFORWARD", "CHUNKING", "BINARYMIME", "STARTTLS"):
                    self.assertNotIn(bad, kws, r.lines)
                for good in ("PIPELINING", "8BITMIME", "DSN"):
                    self.assertIn(good, kws, r.lines)
                sizes = [l[4:] for l in r.lines[1:] if l[4:].upper().startswith("SIZE")]
                self.assertEqual(sizes, ["SIZE %d" % expect], r.lines)
                self.assertTrue(r.lines[-1][3] == " " and all(l[3] == "-" for l in r.lines[:-1]),
                                r.lines)

    # -- logs
    def _one_message(self, port):
        code, msg = self._smtplib_send(port, SPECIAL)
        self.assertEqual(code, 250)
        return msg

    def test_log_text(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port], log="stderr text")
        self._one_message(gate.port)
        closes = gate.wait_event("close")
        self.assertEqual(len(closes), 1, gate.log_text())
        sid = closes[0]["session"]
        conn = [e for e in gate.events("connect") if e["session"] == sid]
        self.assertEqual(len(conn), 1, gate.log_text())
        self.assertEqual(conn[0].get("ip"), "127.0.0.1")
        self.assertIn("port", conn[0])
        self.assertEqual(conn[0].get("listener"), "127.0.0.1:%d" % gate.port)
        msgs = [e for e in gate.events("message") if e["session"] == sid]
        self.assertEqual(len(msgs), 1, gate.log_text())
        self.assertEqual(msgs[0].get("reply"), "250 2.0.0 Ok")
        self.assertEqual(msgs[0].get("rcpts"), "1")
        # size: the message size (accepting wire size too: the SPEC does not say)
        self.assertIn(int(msgs[0].get("size")), (len(SPECIAL), len(stuff(SPECIAL))))
        self.assertRegex(closes[0].get("duration", ""), r"^\d+(\.\d+)?s$")
        self.assertEqual(closes[0].get("messages"), "1")
        self.assertEqual(closes[0].get("refused"), "0")
        # every line of the session carries the same id, and events come in order
        lines = [l for l in gate.log_lines() if l.startswith("session=%s " % sid)]
        evs = [l.split(" ")[1] for l in lines]
        self.assertEqual(evs[0], "connect")
        self.assertEqual(evs[-1], "close")
        self.assertLess(evs.index("connect"), evs.index("message"))

    def test_log_json(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port], log="stderr json")
        self._one_message(gate.port)
        wait_until(lambda: gate.events("close", fmt="json"), 10)
        objs = []
        for l in gate.log_lines():
            try:
                objs.append(json.loads(l))
            except ValueError:
                self.fail("log line is not JSON: %r" % l)
        sess = [o for o in objs if "session" in o]
        events = [o.get("event") for o in sess]
        for e in ("connect", "message", "close"):
            self.assertEqual(events.count(e), 1, objs)
        self.assertEqual(len({o["session"] for o in sess}), 1)
        conn = [o for o in sess if o["event"] == "connect"][0]
        self.assertEqual(conn.get("ip"), "127.0.0.1")
        self.assertEqual(conn.get("listener"), "127.0.0.1:%d" % gate.port)
        msg = [o for o in sess if o["event"] == "message"][0]
        self.assertEqual(msg.get("reply"), "250 2.0.0 Ok")
        self.assertEqual(int(msg.get("rcpts")), 1)
        self.assertIn(int(msg.get("size")), (len(SPECIAL), len(stuff(SPECIAL))))
        close = [o for o in sess if o["event"] == "close"][0]
        self.assertEqual(int(close.get("messages")), 1)

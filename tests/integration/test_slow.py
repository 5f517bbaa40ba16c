"""Slow peers: a client that trickles bytes and an MTA that answers late are
served, never timed out while they make progress, and replies stay in order."""

import time

from harness import GateTestCase, free_port, wait_until


class SlowPeerTest(GateTestCase):

    def test_client_trickling_bytes_is_not_idle(self):
        rec = self.start_recorder()
        gate = self.gate_for(["127.0.0.1:%d" % rec.port],
                             globals_=["timeout command 1s", "timeout data 1s"])
        c = self.greet(gate.port)
        body = b"Subject: slow\r\n\r\n" + b"x" * 20 + b"\r\n"

        def trickle(data, gap=0.15):
            for i in range(len(data)):
                c.send(data[i:i + 1])
                time.sleep(gap)

        trickle(b"MAIL FROM:<a@x.example>\r\n", 0.06)  # ~1.5 s for one command
        self.assertEqual(c.read_reply(timeout=5).code, 250)
        self.assertEqual(c.cmd("RCPT TO:<b@test.example>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        trickle(body + b".\r\n", 0.05)                 # ~2.2 s of body, 1 s idle limit
        r = c.read_reply(timeout=5)
        self.assertEqual(r.code, 250, r)
        self.assertEqual(len(rec.wait_messages(1)), 1)
        self.assertEqual(rec.messages()[0].raw, body)

    def test_slow_mta_pipelined_in_order(self):
        rec = self.start_recorder(mode="slow")
        gate = self.gate_for(["127.0.0.1:%d" % rec.port], globals_=["timeout command 3s"])
        c = self.greet(gate.port, timeout=20)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\n"
               b"RCPT TO:<c@test.example>\r\nNOOP\r\nDATA\r\n")
        codes = [r.code for r in c.read_replies(5, timeout=15)]
        self.assertEqual(codes, [250, 250, 250, 250, 354])
        c.send(b"Subject: s\r\n\r\nslow\r\n.\r\n")
        self.assertEqual(c.read_reply(timeout=10).code, 250)
        self.assertEqual(c.cmd("QUIT", timeout=10).code, 221)


class NonReadingClientTest(GateTestCase):
    """A client that pipelines and never reads its replies fills smtpgate's
    output; the MTA's replies then wait unread in the MTA's socket.  That wait
    is the client's: it ends as a client timeout, and the MTA is not blamed
    (no upstream_timeout, no smtpgate_upstream_errors_total)."""

    def test_not_reading_is_the_clients_timeout(self):
        import re
        import socket
        import urllib.request
        sink = self.start_sink()
        mport = free_port()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port],
                             globals_=["timeout command 2s", "metrics 127.0.0.1:%d" % mport])
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", gate.port))
        self.addCleanup(s.close)
        s.setblocking(False)
        # NOOPs go to the MTA pipelined (an EHLO waits for its reply first)
        s.send(b"EHLO client.example\r\n")
        chunk = b"NOOP\r\n" * 8000
        sent, t0 = 0, time.monotonic()
        # push until the proxy stops taking bytes, never reading a reply
        while time.monotonic() - t0 < 8 and sent < 4_000_000:
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                time.sleep(0.05)
                if time.monotonic() - t0 > 3:
                    break
            except OSError:
                break
        t_stuck = time.monotonic()

        def ended():
            return any(" close " in l or l.endswith(" close") or "timeout" in l
                       for l in gate.log_lines() if l.startswith("session="))
        self.assertTrue(wait_until(ended, 15), gate.log_text()[-2000:])
        waited = time.monotonic() - t_stuck
        log = gate.log_text()
        self.assertIn("timeout state=command", log, log[-2000:])
        self.assertNotIn("upstream_timeout", log, log[-2000:])
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
            text = r.read().decode()
        self.assertIsNone(re.search(r"^smtpgate_upstream_errors_total\{.*\} [1-9]", text, re.M), text)
        # the client's idle limit, not a multiple of it
        self.assertLess(waited, 2 * 2 + 2, "ended %.1fs after the client stopped" % waited)

    def test_slow_reader_working_through_replies_is_served(self):
        """The other side of the rule above: a client that reads its backlog
        of replies slowly, for longer than the idle limit, is working, not
        idle, and gets every reply (800 KB of EHLO replies read at about
        400 KB/s with a 1 s limit)."""
        import socket
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port], globals_=["timeout command 1s"])
        n = 7000                       # 7000 x "EHLO x" fits smtpgate's input buffer
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", gate.port))
        self.addCleanup(s.close)
        s.settimeout(10)
        s.sendall(b"EHLO x\r\n" * n + b"QUIT\r\n")
        got, t0 = bytearray(), time.monotonic()
        while time.monotonic() - t0 < 60:
            part = s.recv(4096)
            if not part:
                break
            got += part
            time.sleep(0.01)
        took = time.monotonic() - t0
        lines = bytes(got).split(b"\r\n")
        self.assertTrue(lines[0].startswith(b"220"), lines[:2])
        finals = [l for l in lines if l[:4] in (b"250 ", b"421 ")]
        self.assertEqual(sum(1 for l in finals if l.startswith(b"250 ")), n,
                         (finals[-3:], gate.log_text()[-1500:]))
        self.assertTrue(lines[-2].startswith(b"221"), lines[-3:])
        self.assertGreater(took, 2.0, "the reading was not slower than the idle limit")

"""Slow peers: a client that trickles bytes and an MTA that answers late are
served, never timed out while they make progress, and replies stay in order."""

import time

from harness import GateTestCase


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

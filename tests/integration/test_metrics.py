"""GET /metrics (SPEC §4): the counters move with what sessions do."""

import re
import signal
import socket
import urllib.error
import urllib.request

from harness import GateTestCase, config_text, free_port, wait_until


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        return r.read().decode()


def value(text, series):
    m = re.search(r"^%s (\d+)$" % re.escape(series), text, re.M)
    return int(m.group(1)) if m else None


class MetricsTest(GateTestCase):

    def _gate(self, servers, **kw):
        mport = free_port()
        g = kw.pop("globals_", [])
        gate = self.gate_for(servers, globals_=g + ["metrics 127.0.0.1:%d" % mport], **kw)
        self.assertTrue(wait_until(lambda: self._up(mport), 5))
        return gate, mport

    @staticmethod
    def _up(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def test_upstream_protocol_error_counted(self):
        import threading
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(4)
        ls.settimeout(10)
        self.addCleanup(ls.close)

        def mta():
            try:
                c, _ = ls.accept()
            except OSError:
                return
            with c:
                c.settimeout(10)
                c.sendall(b"220 mta\r\n")
                buf = b""
                try:
                    while True:
                        d = c.recv(4096)
                        if not d:
                            return
                        buf += d
                        while b"\n" in buf:
                            line, buf = buf.split(b"\n", 1)
                            if line[:4].upper() == b"NOOP":
                                # a line past the 2048 octets of a reply line
                                c.sendall(b"250 " + b"x" * 3000 + b"\r\n")
                            else:
                                c.sendall(b"250 ok\r\n")
                except OSError:
                    return
        t = threading.Thread(target=mta, daemon=True)
        t.start()
        server = "127.0.0.1:%d" % ls.getsockname()[1]
        gate, mport = self._gate([server])
        c = self.greet(gate.port)
        r = c.cmd("NOOP")
        self.assertEqual(r.raw, b"421 4.4.2 Upstream protocol error\r\n")
        text = scrape(mport)
        self.assertEqual(value(text, 'smtpgate_upstream_errors_total{server="%s"}' % server), 1, text)
        t.join(5)

    def test_counters(self):
        sink = self.start_sink()
        dead = free_port()
        gate, mport = self._gate(["127.0.0.1:%d" % dead, "127.0.0.1:%d" % sink.port],
                                 globals_=["max_recipients 1"])
        c = self.greet(gate.port)
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<b@test.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<c@test.example>").code, 452)
        self.assertEqual(c.cmd("DATA").code, 354)
        self.assertEqual(c.cmd("Subject: m\r\n\r\nbody\r\n.").code, 250)
        text = scrape(mport)
        self.assertEqual(value(text, "smtpgate_sessions_active"), 1, text)
        c.cmd("QUIT")
        c.close()
        wait_until(lambda: value(scrape(mport), "smtpgate_sessions_active") == 0, 5)
        text = scrape(mport)
        lst = 'smtpgate_sessions_total{listener="127.0.0.1:%d"}' % gate.port
        self.assertEqual(value(text, lst), 1, text)
        self.assertEqual(value(text, 'smtpgate_messages_total{result="accepted"}'), 1, text)
        self.assertEqual(value(text,
            'smtpgate_refusals_total{stage="rcpt",name="max_recipients",action="reject"}'), 1, text)
        self.assertEqual(value(text,
            'smtpgate_upstream_errors_total{server="127.0.0.1:%d"}' % dead), 1, text)
        self.assertEqual(value(text, "smtpgate_sessions_active"), 0, text)
        self.assertIn('smtpgate_build_info{version="', text)

    def test_reloads_counted_and_read_only(self):
        sink = self.start_sink()
        gate, mport = self._gate(["127.0.0.1:%d" % sink.port])
        with open(gate.conf) as f:
            good = f.read()
        with open(gate.conf, "w") as f:
            f.write("bogus directive\n")
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: value(scrape(mport),
            'smtpgate_config_reloads_total{result="failed"}') == 1, 5))
        with open(gate.conf, "w") as f:
            f.write(good)
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: value(scrape(mport),
            'smtpgate_config_reloads_total{result="ok"}') == 1, 5))
        req = urllib.request.Request("http://127.0.0.1:%d/metrics" % mport, data=b"x", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        self.assertEqual(e.exception.code, 405)
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen("http://127.0.0.1:%d/nothing" % mport, timeout=5)
        self.assertEqual(e.exception.code, 404)

    def test_query_string_and_silent_clients(self):
        """Scrape configs may add params; and clients that connect and say
        nothing must not keep Prometheus out (16 slots, idle 5 s each)."""
        sink = self.start_sink()
        gate, mport = self._gate(["127.0.0.1:%d" % sink.port])
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics?module=smtp" % mport, timeout=5) as r:
            self.assertIn("smtpgate_sessions_active", r.read().decode())
        idle = [socket.create_connection(("127.0.0.1", mport), timeout=5) for _ in range(40)]
        try:
            for _ in range(3):
                self.assertIn("smtpgate_build_info", scrape(mport))
        finally:
            for s in idle:
                s.close()

    def test_max_sessions_refusals_counted(self):
        sink = self.start_sink()
        gate, mport = self._gate(["127.0.0.1:%d" % sink.port], globals_=["max_sessions 1"])
        held = self.greet(gate.port)
        c = self.client(gate.port)
        self.assertTrue(c.read_reply().raw.startswith(b"421 4.3.2"))
        series = 'smtpgate_refusals_total{stage="connect",name="max_sessions",action="close"}'
        self.assertTrue(wait_until(lambda: value(scrape(mport), series) == 1, 5), scrape(mport))
        held.cmd("QUIT")

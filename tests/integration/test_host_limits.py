"""What the host refuses: running out of file descriptors, a listening port
someone else holds (at start and at reload), a `user` that does not exist."""

import os
import signal
import socket
import time

from harness import (GateTestCase, SMTPClient, config_text, free_port, run_binary,
                     wait_until)


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OutOfDescriptorsTest(GateTestCase):

    NOFILE = 64
    CLIENTS = 100
    HOLD_S = 2.0

    def test_listeners_rest_and_recover(self):
        """With every descriptor in use, accept() fails at once, and again at
        each wakeup: smtpgate must neither spin nor flood its log, and must
        serve again once descriptors are free."""
        sink = self.start_sink()
        # pregreet holds each session on its one descriptor without an MTA
        # connection, so descriptors run out at accept (also under valgrind,
        # which keeps some for itself)
        gate = self.start_gate(lambda p: config_text(p, ["127.0.0.1:%d" % sink.port],
                                                     listen=["pregreet 4s"]), start=False)
        gate.nofile = self.NOFILE
        gate.start()
        socks = []
        try:
            for _ in range(self.CLIENTS):
                socks.append(socket.create_connection(("127.0.0.1", gate.port), timeout=5))
            cpu0 = proc_cpu_seconds(gate.pid())
            time.sleep(self.HOLD_S)
            cpu = proc_cpu_seconds(gate.pid()) - cpu0
            errors = [l for l in gate.log_lines() if l.startswith("accept_error")]
            self.assertTrue(errors, "no accept_error logged; log:\n" + gate.log_text()[-2000:])
            # one line per pause of 0.5 s, not one per wakeup
            self.assertLessEqual(len(errors), 2 + int(self.HOLD_S / 0.5) + 2, errors[:5])
            self.assertLess(cpu, 0.5 * self.HOLD_S, "smtpgate spun: %.2fs CPU in %.1fs" % (cpu, self.HOLD_S))
        finally:
            for s in socks:
                s.close()
        # descriptors free again: the backlog and new clients are served
        def serves():
            try:
                c = SMTPClient(gate.port, timeout=8)
                try:
                    return c.read_reply().code == 220 and c.cmd("QUIT").code == 221
                finally:
                    c.close()
            except (OSError, EOFError):
                return False
        self.assertTrue(wait_until(serves, 20, interval=0.3), gate.log_text()[-2000:])


    def test_no_descriptor_for_the_mta_is_smtpgates_own_limit(self):
        """Sessions that took every descriptor while held by pregreet have
        none left for their MTA connection: a 421 4.3.2 and a
        resource_error, not an upstream_error blamed on the MTA."""
        sink = self.start_sink()
        gate = self.start_gate(lambda p: config_text(p, ["127.0.0.1:%d" % sink.port],
                                                     listen=["pregreet 1s"]), start=False)
        gate.nofile = self.NOFILE
        gate.start()
        socks = []
        try:
            for _ in range(self.CLIENTS):
                socks.append(socket.create_connection(("127.0.0.1", gate.port), timeout=5))
            self.assertTrue(wait_until(lambda: any(l.startswith("session=") and "resource_error" in l
                                                   for l in gate.log_lines()), 10),
                            gate.log_text()[-2000:])
            got = b""
            for s in socks:
                s.settimeout(0.2)
                try:
                    got = s.recv(200)
                except OSError:
                    continue
                if got.startswith(b"421"):
                    break
            self.assertTrue(got.startswith(b"421 4.3.2"), got)
        finally:
            for s in socks:
                s.close()
        lines = gate.log_lines()
        self.assertTrue(any('what="upstream socket"' in l for l in lines), lines[-5:])
        self.assertFalse(any(" upstream_error " in l for l in lines), [l for l in lines if "upstream_error" in l][:3])

    def test_metrics_listener_rests_too(self):
        """A scrape arriving with every descriptor in use must not make the
        metrics listener spin on accept(); it is served once fds are free."""
        import urllib.request
        sink = self.start_sink()
        mport = free_port()
        gate = self.start_gate(lambda p: config_text(p, ["127.0.0.1:%d" % sink.port],
                                                     globals_=["metrics 127.0.0.1:%d" % mport],
                                                     listen=["pregreet 6s"]), start=False)
        gate.nofile = self.NOFILE
        gate.start()
        socks = []
        try:
            for _ in range(self.CLIENTS):
                socks.append(socket.create_connection(("127.0.0.1", gate.port), timeout=5))
            # the SMTP listeners are resting now; the scrape waits in the
            # metrics backlog, readable, with no descriptor to take it
            scrape = socket.create_connection(("127.0.0.1", mport), timeout=5)
            socks.append(scrape)
            scrape.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            time.sleep(0.3)
            cpu0 = proc_cpu_seconds(gate.pid())
            time.sleep(self.HOLD_S)
            cpu = proc_cpu_seconds(gate.pid()) - cpu0
            self.assertLess(cpu, 0.5 * self.HOLD_S, "smtpgate spun: %.2fs CPU in %.1fs" % (cpu, self.HOLD_S))
        finally:
            for s in socks:
                s.close()
        def scrapes():
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
                    return b"smtpgate_sessions_active" in r.read()
            except OSError:
                return False
        self.assertTrue(wait_until(scrapes, 20, interval=0.3), gate.log_text()[-2000:])


class BusyPortTest(GateTestCase):

    def _holder(self):
        """A socket bound and listening on a port of our own."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.addCleanup(s.close)
        return s.getsockname()[1]

    def test_start_names_the_listen_line(self):
        sink = self.start_sink()
        busy = self._holder()
        gate = self.start_gate(lambda p: config_text(busy, ["127.0.0.1:%d" % sink.port]), start=False)
        r = run_binary(["-c", gate.conf], timeout=10)
        self.assertEqual(r.returncode, 1, r)
        err = r.stderr.decode("utf-8", "replace")
        self.assertIn("%s:" % gate.conf, err)
        line = [i + 1 for i, l in enumerate(open(gate.conf)) if l.startswith("listen ")][0]
        self.assertIn("%s:%d: listen 127.0.0.1:%d" % (gate.conf, line, busy), err)

    def test_reload_with_a_busy_port_changes_nothing(self):
        sink = self.start_sink()
        servers = ["127.0.0.1:%d" % sink.port]
        gate = self.gate_for(servers, globals_=["max_recipients 1"])
        busy = self._holder()
        text = config_text(gate.port, servers, globals_=["max_recipients 5"])
        text += "listen 127.0.0.1:%d {\n    upstream mta\n}\n" % busy
        with open(gate.conf, "w") as f:
            f.write(text)
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: any(l.startswith("reload") and "failed" in l
                                               for l in gate.log_lines()), 5), gate.log_text())
        self.assertFalse(any(l.startswith("reload") and "ok" in l for l in gate.log_lines()),
                         gate.log_text())
        self.assertTrue(any("listen 127.0.0.1:%d" % busy in l and "smtpgate.conf:" in l
                            for l in gate.log_lines()), gate.log_text())
        # the old config still runs: max_recipients 1
        c = self.greet(gate.port)
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r1@test.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r2@test.example>").code, 452)


class UnknownUserTest(GateTestCase):

    def test_check_refuses_unknown_user(self):
        gate = self.start_gate(lambda p: config_text(p, ["127.0.0.1:%d" % free_port()],
                                                     globals_=["user nosuchuser-sgtest"]),
                               start=False)
        r = run_binary(["-t", "-c", gate.conf])
        self.assertEqual(r.returncode, 1, r)
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        self.assertIn("%s:2: user: no such user nosuchuser-sgtest" % gate.conf, out)

"""SIGHUP: a good config is swapped in, a broken one is refused and logged,
and sessions open at a reload finish under the config they began with."""

import os
import shutil
import signal

from harness import GateTestCase, SMTPClient, config_text, free_port, is_listening, mkdtemp, wait_until


def reload_events(gate, result):
    return [l for l in gate.log_lines() if l.startswith("reload") and
            (result is None or result in l)]


class ReloadTest(GateTestCase):

    def _rewrite(self, gate, text):
        with open(gate.conf, "w") as f:
            f.write(text)

    def test_good_reload_applies_to_new_sessions_only(self):
        sink = self.start_sink()
        servers = ["127.0.0.1:%d" % sink.port]
        gate = self.gate_for(servers, globals_=["max_recipients 2"])
        old = self.greet(gate.port)
        self.assertEqual(old.cmd("MAIL FROM:<a@x.example>").code, 250)

        self._rewrite(gate, config_text(gate.port, servers, globals_=["max_recipients 1"]))
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: reload_events(gate, "ok"), 5), gate.log_text())

        # the open session keeps max_recipients 2
        self.assertEqual(old.cmd("RCPT TO:<r1@test.example>").code, 250)
        self.assertEqual(old.cmd("RCPT TO:<r2@test.example>").code, 250)
        r = old.cmd("RCPT TO:<r3@test.example>")
        self.assertEqual(r.raw, b"452 4.5.3 Error: too many recipients\r\n")
        old.cmd("QUIT")

        # a new one gets max_recipients 1
        new = self.greet(gate.port)
        self.assertEqual(new.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(new.cmd("RCPT TO:<r1@test.example>").code, 250)
        self.assertEqual(new.cmd("RCPT TO:<r2@test.example>").code, 452)
        new.cmd("QUIT")

    def test_broken_reload_keeps_running_config(self):
        sink = self.start_sink()
        servers = ["127.0.0.1:%d" % sink.port]
        gate = self.gate_for(servers, globals_=["max_recipients 1"])
        self._rewrite(gate, "max_recipients many\nlisten 127.0.0.1:%d { upstream nowhere }\n" % gate.port)
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: reload_events(gate, "failed"), 5), gate.log_text())
        errs = [l for l in gate.log_lines() if l.startswith("reload_error")]
        self.assertTrue(any("smtpgate.conf:1: max_recipients" in l for l in errs), errs)
        self.assertTrue(any("smtpgate.conf:2: " in l for l in errs), errs)
        self.assertIsNone(gate.proc.poll(), "exited on a broken reload")
        # still serving, still under the old max_recipients 1
        c = self.greet(gate.port)
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r1@test.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r2@test.example>").code, 452)
        c.cmd("QUIT")

    def test_reload_moves_listener(self):
        sink = self.start_sink()
        servers = ["127.0.0.1:%d" % sink.port]
        gate = self.gate_for(servers)
        port2 = free_port()
        self._rewrite(gate, config_text(port2, servers))
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: is_listening(port2), 5), gate.log_text())
        self.assertTrue(wait_until(lambda: not is_listening(gate.port), 5))
        c = self.greet(port2)
        c.cmd("QUIT")


class ReloadAllOrNothingTest(GateTestCase):
    """A reload that cannot open its metrics socket or its log file is a failed
    reload (SPEC §3.7): FILE:LINE in the log, the old config keeps running and
    smtpgate_config_reloads_total{result="failed"} counts it."""

    def _rewrite(self, gate, text):
        with open(gate.conf, "w") as f:
            f.write(text)

    def _scrape(self, mport):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
            return r.read().decode()

    def _reloads(self, mport, result):
        import re
        m = re.search(r'^smtpgate_config_reloads_total\{result="%s"\} (\d+)$' % result,
                      self._scrape(mport), re.M)
        return int(m.group(1)) if m else None

    def test_metrics_port_taken(self):
        sink = self.start_sink()
        servers = ["127.0.0.1:%d" % sink.port]
        mport = free_port()
        gate = self.gate_for(servers, globals_=["max_recipients 1", "metrics 127.0.0.1:%d" % mport])
        # both series exist before the first reload
        self.assertEqual(self._reloads(mport, "ok"), 0)
        self.assertEqual(self._reloads(mport, "failed"), 0)

        # the sink's port is busy: the new metrics address cannot be bound
        self._rewrite(gate, config_text(gate.port, servers, globals_=[
            "max_recipients 5", "metrics 127.0.0.1:%d" % sink.port]))
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: reload_events(gate, "failed"), 5), gate.log_text())
        errs = [l for l in gate.log_lines() if l.startswith("reload_error")]
        self.assertTrue(any(("smtpgate.conf:3: metrics 127.0.0.1:%d" % sink.port) in l
                            for l in errs), gate.log_text())
        self.assertEqual(self._reloads(mport, "failed"), 1)
        self.assertEqual(self._reloads(mport, "ok"), 0)
        # the old config runs: max_recipients 1
        c = self.greet(gate.port)
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r1@test.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r2@test.example>").code, 452)
        c.cmd("QUIT")

        # going back to the running address is a no-op reload that works
        self._rewrite(gate, config_text(gate.port, servers, globals_=[
            "max_recipients 1", "metrics 127.0.0.1:%d" % mport]))
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: reload_events(gate, "ok"), 5), gate.log_text())
        self.assertEqual(self._reloads(mport, "ok"), 1)

    def test_log_file_cannot_be_opened(self):
        sink = self.start_sink()
        servers = ["127.0.0.1:%d" % sink.port]
        mport = free_port()
        gate = self.gate_for(servers, globals_=["max_recipients 1", "metrics 127.0.0.1:%d" % mport])
        # The config check passes (the directory exists) but opening fails,
        # even for root: the log path is a dangling symlink into a missing
        # directory, so creating the file fails with ENOENT.
        logpath = os.path.join(gate.dir, "x.log")
        os.symlink(os.path.join(gate.dir, "missing", "x.log"), logpath)
        self._rewrite(gate, config_text(gate.port, servers, log="%s text" % logpath,
                                        globals_=["max_recipients 5",
                                                  "metrics 127.0.0.1:%d" % mport]))
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: reload_events(gate, "failed"), 5), gate.log_text())
        self.assertTrue(any("smtpgate.conf:1: log %s: No such file" % logpath in l
                            for l in gate.log_lines()), gate.log_text())
        self.assertEqual(self._reloads(mport, "failed"), 1)
        # the old config runs: max_recipients 1, logging still to stderr
        c = self.greet(gate.port)
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r1@test.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r2@test.example>").code, 452)
        c.cmd("QUIT")

    def test_log_directory_missing(self):
        sink = self.start_sink()
        servers = ["127.0.0.1:%d" % sink.port]
        gate = self.gate_for(servers)
        self._rewrite(gate, config_text(gate.port, servers, log="%s/gone/x.log text" % gate.dir))
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: reload_events(gate, "failed"), 5), gate.log_text())
        self.assertTrue(any("smtpgate.conf:1: log: directory %s/gone" % gate.dir in l
                            for l in gate.log_lines()), gate.log_text())
        c = self.greet(gate.port)      # still logging to stderr, still serving
        c.cmd("QUIT")
        self.assertTrue(wait_until(lambda: any(l.startswith("session=") and " close " in l
                                               for l in gate.log_lines()), 5), gate.log_text())

    def test_user_change_is_announced(self):
        if os.geteuid() != 0:
            self.skipTest("`user` only applies when started as root")
        sink = self.start_sink()
        servers = ["127.0.0.1:%d" % sink.port]
        gate = self.gate_for(servers)
        self._rewrite(gate, config_text(gate.port, servers, globals_=["user nobody"]))
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: reload_events(gate, "ok"), 5), gate.log_text())
        warn = [l for l in gate.log_lines() if l.startswith("reload_warning")]
        self.assertTrue(any("smtpgate.conf:2: user nobody takes effect at the next start" in l
                            for l in warn), gate.log_text())


class ReloadIncludesTest(GateTestCase):
    """Includes at SIGHUP: what cannot be read fails the reload as a whole,
    and nothing an include names can block the event loop."""

    def test_fifo_include_fails_the_reload_without_blocking(self):
        sink = self.start_sink()
        servers = ["127.0.0.1:%d" % sink.port]
        gate = self.gate_for(servers, globals_=["max_recipients 1"])
        fifo = os.path.join(gate.dir, "pipe.conf")
        os.mkfifo(fifo)
        with open(gate.conf, "a") as f:
            f.write("include %s\n" % fifo)
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: reload_events(gate, "failed"), 5), gate.log_text())
        self.assertTrue(any("include: cannot read \\\"%s\\\": not a regular file" % fifo in l
                            for l in gate.log_lines()), gate.log_text())
        c = self.greet(gate.port)       # the loop was never blocked
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r1@test.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r2@test.example>").code, 452)
        c.cmd("QUIT")

    def test_unreadable_glob_directory_fails_the_reload(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to start and `user nobody` to drop to")
        sink = self.start_sink()
        servers = ["127.0.0.1:%d" % sink.port]
        d = mkdtemp("sgit-priv-")
        self.addCleanup(shutil.rmtree, d, True)
        priv = os.path.join(d, "priv")
        os.mkdir(priv, 0o700)
        with open(os.path.join(priv, "a.conf"), "w") as f:
            f.write("max_recipients 1\n")
        gate = self.gate_for(servers, globals_=["user nobody", "include %s/*.conf" % priv])
        os.chmod(gate.dir, 0o755)
        os.chmod(gate.conf, 0o644)
        # as nobody, priv/ cannot be searched: that is an error, never "no match"
        gate.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: reload_events(gate, "failed"), 5), gate.log_text())
        self.assertTrue(any("priv/*.conf\\\": Permission denied" in l
                            for l in gate.log_lines()), gate.log_text())
        c = self.greet(gate.port)       # still max_recipients 1 from priv/a.conf
        self.assertEqual(c.cmd("MAIL FROM:<a@x.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r1@test.example>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<r2@test.example>").code, 452)
        c.cmd("QUIT")

"""SIGHUP: a good config is swapped in, a broken one is refused and logged,
and sessions open at a reload finish under the config they began with."""

import signal

from harness import GateTestCase, SMTPClient, config_text, free_port, is_listening, wait_until


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

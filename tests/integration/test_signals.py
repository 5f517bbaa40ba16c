"""Signals, -t, -V."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import (BINARY, Gate, GateTestCase, SMTPClient, config_text, free_port,
                     is_listening, run_binary, wait_until)

BODY = b"Subject: shutdown\r\n\r\nfinishing under shutdown_grace\r\n"


class SignalTest(GateTestCase):

    def test_sigterm_open_session_finishes(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port], globals_=["shutdown_grace 10s"])
        c = self.greet(gate.port)
        c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@test.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.read_replies(3)], [250, 250, 354])
        gate.signal(signal.SIGTERM)
        # new connections are refused
        wait_until(lambda: not is_listening(gate.port), 3)
        try:
            c2 = SMTPClient(gate.port, timeout=3)
            self.addCleanup(c2.close)
            got, closed = c2.read_until_close(timeout=3)
            self.assertFalse(c2.received.startswith(b"220"),
                             "a new session was served after SIGTERM: %r" % c2.received)
        except (ConnectionRefusedError, ConnectionResetError):
            pass
        self.assertIsNone(gate.proc.poll(), "exited while a session was open")
        # the open session finishes its message
        c.send(BODY + b".\r\n")
        r = c.read_reply(timeout=10)
        self.assertEqual(r.raw, b"250 2.0.0 Ok\r\n")
        q = c.cmd("QUIT")
        self.assertEqual(q.code, 221)
        rc = gate.wait_exit(8)
        self.assertEqual(rc, 0, "exit code %r after the last session ended" % rc)
        self.assertEqual(sink.wait_count(1), 1)
        self.assertEqual(sink.messages()[0].body, BODY.replace(b"\r\n", b"\n"))

    def test_sigterm_idle_session_grace_1s(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port],
                             globals_=["shutdown_grace 1s", "timeout command 5m"])
        c = self.greet(gate.port)
        t0 = time.monotonic()
        gate.signal(signal.SIGTERM)
        rc = gate.wait_exit(10)
        took = time.monotonic() - t0
        self.assertIsNotNone(rc, "did not exit within 10s")
        self.assertEqual(rc, 0)
        self.assertLess(took, 2.5, "took %.2fs to exit with shutdown_grace 1s" % took)
        _, closed = c.read_until_close(timeout=3)
        self.assertTrue(closed)

    def test_sigterm_no_sessions(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port])
        for sig in (signal.SIGTERM,):
            t0 = time.monotonic()
            gate.signal(sig)
            rc = gate.wait_exit(5)
            self.assertEqual(rc, 0)
            self.assertLess(time.monotonic() - t0, 2)

    def test_sigint_no_sessions(self):
        sink = self.start_sink()
        gate = self.gate_for(["127.0.0.1:%d" % sink.port])
        gate.signal(signal.SIGINT)
        self.assertEqual(gate.wait_exit(5), 0)


class CommandLineTest(GateTestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="sgit-cli-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def write(self, name, text):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def good(self):
        return config_text(free_port(), ["127.0.0.1:%d" % free_port()])

    def out(self, p):
        return (p.stdout + p.stderr).decode(errors="replace")

    def test_t_good(self):
        path = self.write("good.conf", self.good())
        p = run_binary(["-t", "-c", path])
        self.assertEqual(p.returncode, 0, self.out(p))
        self.assertIn("%s: ok" % path, self.out(p).splitlines())

    def test_t_good_all_globals(self):
        text = config_text(free_port(), ["127.0.0.1:%d" % free_port()], log="stderr json",
                           globals_=["max_sessions 100; max_recipients 5",
                                     "max_message_size 10M", "timeout command 30s",
                                     "timeout data 1m", "shutdown_grace 500ms",
                                     "bare_newline reject", "limit_table_size 1000"])
        path = self.write("good2.conf", text)
        p = run_binary(["-t", "-c", path])
        self.assertEqual(p.returncode, 0, self.out(p))
        self.assertIn("%s: ok" % path, self.out(p).splitlines())

    def _bad(self, text, line, name="bad.conf"):
        path = self.write(name, text)
        p = run_binary(["-t", "-c", path])
        out = self.out(p)
        self.assertEqual(p.returncode, 1, out)
        errs = [l for l in out.splitlines() if l.strip()]
        self.assertTrue(errs, "no error printed")
        rx = re.compile(r"^%s:(\d+): \S" % re.escape(path))
        for l in errs:
            self.assertRegex(l, rx)
        if line is not None:
            lines = line if isinstance(line, tuple) else (line,)
            got = [int(rx.match(l).group(1)) for l in errs]
            self.assertTrue(set(lines) & set(got), "expected an error at line %s: %s" % (lines, out))
        self.assertNotIn("%s: ok" % path, out)
        return out

    def test_t_unknown_directive(self):
        self._bad("log stderr text\n# comment\nfrobnicate yes\n" + self.good(), 3)

    def test_t_bad_duration(self):
        self._bad("log stderr text\ntimeout command 5x\n" + self.good(), 2)

    def test_t_bad_size(self):
        self._bad("max_message_size lots\n" + self.good(), 1)

    def test_t_bad_bare_newline(self):
        self._bad("\n\nbare_newline sometimes\n" + self.good(), 3)

    def test_t_undefined_upstream(self):
        text = self.good() + "listen 127.0.0.1:%d {\n    upstream nosuch\n}\n" % free_port()
        n = text.count("\n") - 1
        self._bad(text, (n - 1, n))    # the listen line or its upstream line

    def test_t_bad_forward(self):
        text = "log stderr text\nupstream mta {\n  server 127.0.0.1:25\n  forward carrier-pigeon\n}\n"
        text += "listen 127.0.0.1:%d { upstream mta }\n" % free_port()
        self._bad(text, 4)

    def test_t_unterminated_block(self):
        self._bad("log stderr text\nupstream mta {\n  server 127.0.0.1:25\n", None)

    def test_t_error_in_include(self):
        inc = self.write("inc.conf", "max_recipients 10\nwhat is this\n")
        main = self.write("main.conf", "include %s\n" % inc + self.good())
        p = run_binary(["-t", "-c", main])
        out = self.out(p)
        self.assertEqual(p.returncode, 1, out)
        self.assertIn("%s:2: " % inc, out)

    def test_bad_config_does_not_start(self):
        path = self.write("bad.conf", "frobnicate\n" + self.good())
        p = run_binary(["-c", path], timeout=10)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("%s:1: " % path, self.out(p))

    def test_V(self):
        p = run_binary(["-V"])
        out = self.out(p)
        self.assertEqual(p.returncode, 0, out)
        self.assertRegex(out.splitlines()[0], r"^smtpgate \d+\.\d+(\.\d+)?\S*$")
        for lib in ("OpenSSL", "PCRE2", "libmaxminddb", "libev"):
            self.assertRegex(out, r"(?i)%s\D{0,20}\d+\.\d+" % re.escape(lib))
        # the OpenSSL it runs with is the system's
        try:
            ov = subprocess.run(["openssl", "version"], stdout=subprocess.PIPE, text=True,
                                timeout=10).stdout.split()[1]
            self.assertIn(ov, out)
        except (OSError, IndexError):
            pass


class EarlySignalTest(GateTestCase):
    """A SIGHUP that arrives while smtpgate is still loading its config and
    binding is held until the loop can take it, not fatal (SIGHUP's default
    action is to terminate)."""

    def test_hup_during_startup_is_a_reload(self):
        if os.environ.get("SMTPGATE_VALGRIND_DIR"):
            # valgrind masks signals for its own reasons: SigBlk says
            # nothing about smtpgate's main() there
            self.skipTest("not meaningful under valgrind")
        sink = self.start_sink()
        d = tempfile.mkdtemp(prefix="sgit-early-")
        self.addCleanup(shutil.rmtree, d, True)
        port = free_port()
        # 1,000 upstreams of 64 servers each (the most a config may have)
        # make loading take tens of milliseconds, so the signal lands
        # before the loop runs
        text = config_text(port, ["127.0.0.1:%d" % sink.port])
        text += "".join("upstream u%d {\n%s}\n" % (i, "".join(
            "  server 127.0.0.%d:%d\n" % (j + 1, 1000 + i) for j in range(64)))
            for i in range(1000))
        path = os.path.join(d, "early.conf")
        with open(path, "w") as f:
            f.write(text)
        logf = open(os.path.join(d, "early.log"), "wb")
        self.addCleanup(logf.close)
        proc = subprocess.Popen([BINARY, "-c", path], stdout=logf, stderr=logf,
                                stdin=subprocess.DEVNULL, env=Gate.env())
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        # once main() holds the signals, before the loop runs
        self.assertTrue(wait_until(lambda: _sighup_blocked(proc.pid), 5, interval=0.001))
        if is_listening(port):
            self.skipTest("start-up was too quick to signal it half way")
        proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: proc.poll() is not None or is_listening(port), 20))
        self.assertIsNone(proc.poll(), "SIGHUP during start-up killed smtpgate")
        # the held SIGHUP was taken as a reload once the loop ran
        logpath = os.path.join(d, "early.log")
        self.assertTrue(wait_until(lambda: b"reload msg=ok" in _read(logpath), 20),
                        _read(logpath)[-2000:])
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(20), 0)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _sighup_blocked(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigBlk:"):
                    return int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)) != 0
    except OSError:
        pass
    return False


class ExplainValuesTest(GateTestCase):
    """-x refuses values it cannot mean instead of guessing."""

    def test_bad_values(self):
        d = tempfile.mkdtemp(prefix="sgit-x-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "x.conf")
        with open(path, "w") as f:
            f.write(config_text(free_port(), ["127.0.0.1:%d" % free_port()]))
        for bad in ("port=abc", "port=-1", "port=0", "port=65536", "tls=maybe", "rcpt=", "helo="):
            p = run_binary(["-c", path, "-x", bad])
            self.assertEqual(p.returncode, 2, (bad, p.stdout, p.stderr))
        for good in ("port=587 tls=on", "sender= rcpt=a@b.example", "tls=off"):
            p = run_binary(["-c", path, "-x", good])
            self.assertEqual(p.returncode, 0, (good, p.stdout, p.stderr))

    def _conf(self, globals_=()):
        d = tempfile.mkdtemp(prefix="sgit-x-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "x.conf")
        with open(path, "w") as f:
            f.write(config_text(free_port(), ["127.0.0.1:%d" % free_port()], globals_=globals_))
        return path

    def test_stages_printed_with_the_replies(self):
        path = self._conf(["max_recipients 1"])
        p = run_binary(["-c", path, "-x", "ip=203.0.113.9 helo=mx.example sender= "
                        "rcpt=a@b.example rcpt=c@d.example"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")
        lines = p.stdout.decode().splitlines()
        self.assertEqual([l.split()[0] for l in lines], ["connect", "helo", "mail", "rcpt", "rcpt"], lines)
        self.assertIn("203.0.113.9: pass", lines[0])
        self.assertIn("<>: pass", lines[2])
        self.assertIn('c@d.example: refused by max_recipients -> "452 4.5.3', lines[4])

    def test_errors_on_stderr_values_escaped_keys_once(self):
        path = self._conf()
        for bad, said in (("helo=a\x1b[2J bogus=1", b'unknown key "bogus"'),
                          ("ip=192.0.2.1 ip=192.0.2.2", b"ip given twice"),
                          ("tls=yes", b"tls: expected on or off"),
                          ("ip=\x1b[2J", b"ip=\\x1b[2J is not an address")):
            p = run_binary(["-c", path, "-x", bad])
            self.assertEqual(p.returncode, 2, (bad, p.stdout, p.stderr))
            self.assertEqual(p.stdout, b"", bad)
            self.assertIn(said, p.stderr, bad)
            self.assertNotIn(b"\x1b", p.stderr, bad)
        # -t and -x ask for two things at once
        p = run_binary(["-t", "-c", path, "-x", "ip=192.0.2.1"])
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"usage:", p.stderr)

"""Integration-test harness for smtpgate: real peers, no mocks.

Peers:
  * Sink         - Postfix's smtp-sink, dumping each message to a file.
  * RecordingMTA - a small Python SMTP server that records the exact bytes it
                   receives.  smtp-sink's dump cannot be used for byte-exact
                   comparison: it writes lines with LF instead of CRLF, removes
                   bare CRs, and un-does dot-stuffing, so "\\n" vs "\\r\\n",
                   "\\r" and ".." on the wire are all indistinguishable in its
                   dump.  The recording server also plays the failure cases
                   smtp-sink cannot (no banner, drop mid-DATA, stall on the
                   final dot), so it is also exported as RawMTA.
  * Postfix      - a private Postfix instance (postfix -c DIR start).
  * Gate         - smtpgate itself, run in the foreground from a temp config.

Every process started here is stopped by PID; every wait is bounded.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

BINARY = os.environ.get("SMTPGATE_BINARY", "/work/main/build/smtpgate")
ASAN = os.environ.get("SMTPGATE_ASAN", "") == "1"

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SWAKS = shutil.which("swaks") or "/usr/bin/swaks"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

_live_pids = set()      # every process we started and have not reaped yet
_live_lock = threading.Lock()


def _track(proc):
    with _live_lock:
        _live_pids.add(proc.pid)


def _untrack(proc):
    with _live_lock:
        _live_pids.discard(proc.pid)


def kill_leftovers():
    """Last resort at the end of a run: SIGKILL what we started, by PID."""
    with _live_lock:
        pids = list(_live_pids)
        _live_pids.clear()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def stop_process(proc, sig=signal.SIGTERM, timeout=10.0):
    """Signal a Popen by PID and wait (bounded); SIGKILL if it lingers."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except OSError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    _untrack(proc)
    return proc.returncode


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _listening_ports():
    ports = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A":
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def is_listening(port):
    """True if some socket listens on port (checked without connecting, so
    no session is created at the proxy and no connection at the peer)."""
    return port in _listening_ports()


def wait_until(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def mkdtemp(prefix="sgit-"):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


# ---------------------------------------------------------------------------
# SMTP client helpers

class Reply:
    def __init__(self, lines, raw):
        self.lines = lines          # list of str, without CRLF
        self.raw = raw              # bytes as received
        self.code = int(lines[-1][:3])

    @property
    def text(self):
        return "\n".join(l[4:] for l in self.lines)

    @property
    def last(self):
        return self.lines[-1]

    def startswith(self, s):
        return self.lines[0].startswith(s)

    def __repr__(self):
        return "Reply(%r)" % (self.raw,)


class SMTPClient:
    """A raw-socket SMTP client: send bytes, read (multi-line) replies."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0, source=None):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=source)
        self.buf = b""
        self.eof = False
        self.received = b""     # everything ever received, for "never 250" checks

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out waiting for reply")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(262144)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise EOFError("connection closed; pending %r" % self.buf[:200])
        self.buf += chunk
        self.received += chunk

    def read_line(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill(deadline)

    def read_reply(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        lines, raw = [], b""
        while True:
            while True:
                i = self.buf.find(b"\r\n")
                if i >= 0:
                    break
                self._fill(deadline)
            line, self.buf = self.buf[:i], self.buf[i + 2:]
            raw += line + b"\r\n"
            s = line.decode("latin-1")
            lines.append(s)
            if len(s) < 4 or s[3] != "-":
                if not re.match(r"^\d{3}", s):
                    raise ValueError("malformed reply line %r" % s)
                return Reply(lines, raw)

    def read_replies(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        out = []
        for _ in range(n):
            out.append(self.read_reply(timeout=max(0.01, deadline - time.monotonic())))
        return out

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.read_reply(timeout)

    def read_until_close(self, timeout=10.0):
        """Read until EOF; returns (bytes_read_incl_buffer, closed)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
        except EOFError:
            data, self.buf = self.buf, b""
            return data, True
        except (socket.timeout, TimeoutError):
            data, self.buf = self.buf, b""
            return data, False
        except OSError:
            data, self.buf = self.buf, b""
            return data, True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def run_swaks(args, timeout=60):
    """Run swaks; returns CompletedProcess (text)."""
    return subprocess.run([SWAKS] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, errors="replace", text=True)


def stuff(content):
    """SMTP transparency (RFC 5321 4.5.2) for a CRLF-lined message."""
    if content.startswith(b"."):
        content = b"." + content
    return content.replace(b"\r\n.", b"\r\n..")


# ---------------------------------------------------------------------------
# smtp-sink

class SinkMessage:
    def __init__(self, path, data):
        self.path = path
        self.dump = data
        self.headers = {}
        self.rcpts = []
        lines = data.split(b"\n")
        i = 0
        while i < len(lines):
            l = lines[i]
            if l.startswith(b"Received: "):
                i += 1
                while i < len(lines) and lines[i].startswith(b"\t"):
                    i += 1
                break
            k, _, v = l.partition(b": ")
            k = k.decode()
            if k == "X-Rcpt-Args":
                self.rcpts.append(v.decode("latin-1"))
            else:
                self.headers[k] = v.decode("latin-1")
            i += 1
        body = b"\n".join(lines[i:])
        # the dump ends with the message's last line + "\n" and one empty line
        if body.endswith(b"\n"):
            body = body[:-1]
        self.body = body        # message as smtp-sink saw it, LF line ends, un-stuffed
        self.mail = self.headers.get("X-Mail-Args")
        self.client_addr = self.headers.get("X-Client-Addr")
        self.helo = self.headers.get("X-Helo-Args")


def sink_view(content):
    """What smtp-sink's dump shows for a CRLF-lined, un-stuffed message."""
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    return content.replace(b"\r\n", b"\n")


class Sink:
    def __init__(self, extra_args=(), tmpdir=None):
        self.port = None
        self.dir = tmpdir or mkdtemp("sgit-sink-")
        self.dumpdir = os.path.join(self.dir, "dump")
        os.makedirs(self.dumpdir)
        shutil.chown(self.dumpdir, user="nobody")
        self.extra = list(extra_args)
        self.proc = None

    def start(self):
        for attempt in range(5):
            self.port = free_port()
            self.out = open(os.path.join(self.dir, "sink.out"), "wb")
            self.proc = subprocess.Popen(
                [SMTP_SINK, "-u", "nobody", "-d", self.dumpdir + "/%M.", "-c"] + self.extra +
                ["127.0.0.1:%d" % self.port, "1000"],
                stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            _track(self.proc)
            if wait_until(lambda: is_listening(self.port) or self.proc.poll() is not None, 10):
                if self.proc.poll() is None:
                    return self
            stop_process(self.proc)
            self.out.close()
        raise RuntimeError("smtp-sink did not start")

    def stop(self):
        stop_process(self.proc)
        try:
            self.out.close()
        except Exception:
            pass

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def files(self):
        try:
            return sorted(os.path.join(self.dumpdir, f) for f in os.listdir(self.dumpdir))
        except OSError:
            return []

    def count(self):
        return len(self.files())

    def wait_count(self, n, timeout=15.0):
        wait_until(lambda: self.count() >= n, timeout)
        time.sleep(0.2)     # let a late extra dump show up / file be completed
        return self.count()

    def messages(self):
        out = []
        for p in self.files():
            with open(p, "rb") as f:
                out.append(SinkMessage(p, f.read()))
        return out


# ---------------------------------------------------------------------------
# Recording MTA (also the scripted "raw" MTA for failure cases)

class RecordedMessage:
    def __init__(self, mail, rcpts, raw):
        self.mail = mail        # bytes, the MAIL command line
        self.rcpts = rcpts      # list of bytes RCPT lines
        self.raw = raw          # wire bytes after 354 up to (excl.) ".\r\n" final
        lines = raw.split(b"\r\n")
        self.content = b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


class RecordedConn:
    def __init__(self, peer):
        self.peer = peer
        self.commands = []          # raw command lines (bytes, without line end)
        self.messages = []          # complete messages (final dot seen)
        self.partial_data = None    # DATA bytes when the peer closed mid-DATA
        self.proxy_header = None    # bytes of a PROXY header, if one was read
        self.closed = False
        self.closed_mid_data = False
        self.data_bytes = 0         # DATA bytes received so far (live)


class RecordingMTA:
    """A scripted SMTP server recording exactly what it receives.

    mode: "normal"       - a strict, ordinary MTA (only CRLF.CRLF ends DATA)
          "no_banner"    - accepts and never says anything
          "drop_in_data" - after 354, reads some body bytes and closes
          "stall_dot"    - receives the whole message, never answers the dot
          "pause_body"   - after 354, reads nothing for PAUSE_BODY_S (with
                           rcvbuf set, the body backs up into smtpgate)
          "ignore_rset"  - never answers RSET (and reads on)
          "close_in_setup" - greets, then closes at XCLIENT or STARTTLS
          "rst_after_banner" - greets, then resets the connection at once
          "mute_after_ehlo" - answers EHLO, then reads on and answers nothing
          "close_421_rcpt" - answers a RCPT with 421 and closes
          "early_reply"  - answers 552 in the middle of the body, and not
                           the final dot (out of step, as a broken MTA is)
    """

    PAUSE_BODY_S = 2.0

    SLOW_REPLY_S = 0.3

    def __init__(self, mode="normal", banner=None, ehlo=None, dot_reply=None,
                 expect_proxy=False, auth=False, refuse_mail=None, rcvbuf=None,
                 refuse_helo=None):
        self.mode = mode
        self.refuse_mail = refuse_mail   # bytes: a MAIL line holding it gets 550
        # bytes: a HELO/EHLO holding it gets 501 and leaves the transaction
        # open (Postfix with smtpd_delay_reject = no); others reset it
        self.refuse_helo = refuse_helo
        self.auth = auth     # offer AUTH PLAIN LOGIN; the password "good" passes
        self.token = "%08X" % random.getrandbits(32)
        self.banner = banner or ("220 rec-%s.test ESMTP recorder" % self.token)
        self.ehlo = ehlo or ["rec.test", "PIPELINING", "SIZE 20000000", "8BITMIME",
                             "ENHANCEDSTATUSCODES", "DSN"]
        self.dot_reply = dot_reply or ("250 2.0.0 Ok: queued as REC%s" % self.token)
        self.expect_proxy = expect_proxy
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            # set before listen(): accepted sockets inherit it, autotuning off
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.lsock.bind(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.threads = []

    def start(self):
        self.lsock.listen(512)
        self.lsock.settimeout(0.2)
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def stop(self):
        self.stopping.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        for t in list(self.threads):
            t.join(timeout=3)

    cleanup = stop

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                s, peer = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            rec = RecordedConn(peer)
            with self.lock:
                self.conns.append(rec)
            t = threading.Thread(target=self._serve, args=(s, rec), daemon=True)
            t.start()
            self.threads.append(t)

    # -- per connection
    def _serve(self, s, rec):
        s.settimeout(0.2)
        buf = [b""]

        def recv():
            while not self.stopping.is_set():
                try:
                    d = s.recv(262144)
                except socket.timeout:
                    continue
                except OSError:
                    return b""
                return d
            return b""

        def read_line():
            while True:
                i = buf[0].find(b"\n")
                if i >= 0:
                    line, buf[0] = buf[0][:i + 1], buf[0][i + 1:]
                    return line
                d = recv()
                if not d:
                    return None
                buf[0] += d

        def send(text):
            if self.mode == "slow":
                time.sleep(self.SLOW_REPLY_S)   # a slow MTA: every reply late
            try:
                s.sendall(text.encode("latin-1") + b"\r\n")
            except OSError:
                pass

        try:
            if self.expect_proxy:
                first = recv()
                buf[0] = first
                if first.startswith(b"PROXY "):
                    i = buf[0].find(b"\r\n")
                    while i < 0:
                        d = recv()
                        if not d:
                            return
                        buf[0] += d
                        i = buf[0].find(b"\r\n")
                    rec.proxy_header, buf[0] = buf[0][:i + 2], buf[0][i + 2:]
                elif first.startswith(b"\r\n\r\n\x00\r\nQUIT\n"):
                    while len(buf[0]) < 16:
                        d = recv()
                        if not d:
                            return
                        buf[0] += d
                    ln = 16 + int.from_bytes(buf[0][14:16], "big")
                    while len(buf[0]) < ln:
                        d = recv()
                        if not d:
                            return
                        buf[0] += d
                    rec.proxy_header, buf[0] = buf[0][:ln], buf[0][ln:]
            if self.mode == "no_banner":
                while recv():
                    pass
                return
            send(self.banner)
            if self.mode == "rst_after_banner":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                return
            mail, rcpts = None, []
            while True:
                line = read_line()
                if line is None:
                    return
                cmdline = line.rstrip(b"\r\n")
                rec.commands.append(cmdline)
                # blanks as Postfix's tokenizer sees them: SP and HTAB
                verb = (cmdline.split(None, 1) or [b""])[0].upper()
                if verb in (b"XCLIENT", b"STARTTLS") and self.mode == "close_in_setup":
                    return
                if self.mode == "mute_after_ehlo" and verb != b"EHLO":
                    continue
                if verb in (b"EHLO", b"HELO") and self.refuse_helo and self.refuse_helo in cmdline:
                    send("501 5.5.2 <%s>: Helo command rejected: Invalid name"
                         % cmdline[5:].decode("ascii", "replace"))
                    continue
                if verb in (b"EHLO", b"HELO"):
                    mail, rcpts = None, []      # RFC 5321 4.1.4
                if verb == b"EHLO":
                    lines = self.ehlo + (["AUTH PLAIN LOGIN"] if self.auth else [])
                    for i, l in enumerate(lines):
                        send(("250-" if i < len(lines) - 1 else "250 ") + l)
                elif verb == b"HELO":
                    send("250 " + self.ehlo[0])
                elif verb == b"MAIL":
                    if self.refuse_mail and self.refuse_mail in cmdline:
                        send("550 5.7.1 Sender refused")
                        continue
                    if mail is not None:
                        send("503 5.5.1 Error: nested MAIL command")
                        continue
                    mail, rcpts = cmdline, []
                    send("250 2.1.0 Ok")
                elif verb == b"RCPT" and self.mode == "close_421_rcpt":
                    send("421 4.3.2 Shutting down")
                    return
                elif verb == b"RCPT":
                    if mail is None:
                        send("503 5.5.1 Error: need MAIL command")
                    else:
                        rcpts.append(cmdline)
                        send("250 2.1.5 Ok")
                elif verb == b"DATA":
                    if not rcpts:
                        send("554 5.5.1 Error: no valid recipients")
                        continue
                    send("354 End data with <CR><LF>.<CR><LF>")
                    if self.mode == "drop_in_data":
                        while not buf[0]:
                            d = recv()
                            if not d:
                                break
                            buf[0] += d
                        rec.partial_data = buf[0]
                        rec.closed_mid_data = True
                        return
                    if self.mode == "pause_body":
                        time.sleep(self.PAUSE_BODY_S)
                    if self.mode == "early_reply":
                        while not buf[0]:
                            d = recv()
                            if not d:
                                break
                            buf[0] += d
                        send("552 5.3.4 Message too big (early)")
                    data = bytearray(b"\r\n" + buf[0])   # bytearray: O(1) appends
                    buf[0] = b""
                    pos = 0
                    while True:
                        i = data.find(b"\r\n.\r\n", pos)
                        if i >= 0:
                            break
                        pos = max(0, len(data) - 4)
                        d = recv()
                        if not d:
                            rec.partial_data = bytes(data[2:])
                            rec.closed_mid_data = True
                            return
                        data += d
                        rec.data_bytes = len(data) - 2
                    raw = bytes(data[2:i + 2]) if i > 0 else b""
                    buf[0] = bytes(data[i + 5:])
                    with self.lock:
                        rec.messages.append(RecordedMessage(mail, rcpts, raw))
                    mail, rcpts = None, []
                    if self.mode == "stall_dot":
                        while recv():
                            pass
                        return
                    if self.mode != "early_reply":
                        send(self.dot_reply)
                elif verb == b"RSET":
                    mail, rcpts = None, []
                    if self.mode != "ignore_rset":
                        send("250 2.0.0 Ok")
                elif verb == b"NOOP":
                    send("250 2.0.0 Ok")
                elif verb == b"QUIT":
                    send("221 2.0.0 Bye")
                    return
                elif verb == b"XCLIENT":
                    send(self.banner)
                elif verb == b"AUTH" and self.auth:
                    send(self._auth(cmdline, read_line, send))
                elif verb == b"XFORWARD":
                    send("250 2.0.0 Ok")
                elif verb == b"STARTTLS":
                    send("454 4.7.0 TLS not available")
                else:
                    send("502 5.5.2 Error: command not recognized")
        finally:
            rec.closed = True
            try:
                s.close()
            except OSError:
                pass

    @staticmethod
    def _auth(cmdline, read_line, send):
        """PLAIN (initial response or after 334) and LOGIN; password 'good'."""
        import base64
        words = cmdline.split(b" ")
        mech = words[1].upper() if len(words) > 1 else b""

        def answer(prompt):
            send("334 " + prompt)
            line = read_line()
            return (line or b"*").rstrip(b"\r\n")

        try:
            if mech == b"PLAIN":
                resp = words[2] if len(words) > 2 else answer("")
                if resp == b"*":
                    return "501 5.7.0 Authentication aborted"
                parts = base64.b64decode(resp).split(b"\0")
                ok = len(parts) == 3 and parts[2] == b"good"
            elif mech == b"LOGIN":
                user = words[2] if len(words) > 2 else answer("VXNlcm5hbWU6")
                if user == b"*":
                    return "501 5.7.0 Authentication aborted"
                pw = answer("UGFzc3dvcmQ6")
                if pw == b"*":
                    return "501 5.7.0 Authentication aborted"
                ok = base64.b64decode(pw) == b"good"
            else:
                return "504 5.5.4 Unrecognized authentication type"
        except ValueError:
            return "501 5.5.2 Cannot decode response"
        return "235 2.7.0 Authentication successful" if ok else \
            "535 5.7.8 Error: authentication failed"

    # -- observation
    def messages(self):
        with self.lock:
            return [m for c in self.conns for m in c.messages]

    def all_commands(self):
        with self.lock:
            return [cmd for c in self.conns for cmd in c.commands]

    def wait_messages(self, n, timeout=10.0):
        wait_until(lambda: len(self.messages()) >= n, timeout)
        return self.messages()

    def wait_all_closed(self, timeout=10.0):
        return wait_until(lambda: all(c.closed for c in list(self.conns)), timeout)

    def wait_conns(self, n, timeout=10.0):
        return wait_until(lambda: len(self.conns) >= n, timeout)


RawMTA = RecordingMTA


# ---------------------------------------------------------------------------
# smtpgate

def parse_text_log_line(line):
    """Parse `session=ID EVENT key=value key="v a l" ...` into a dict."""
    out = {}
    i, n = 0, len(line)
    words = []
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        if i >= n:
            break
        j = i
        while j < n and line[j] not in " =":
            j += 1
        key = line[i:j]
        if j < n and line[j] == "=":
            j += 1
            if j < n and line[j] == '"':
                j += 1
                val = []
                while j < n and line[j] != '"':
                    if line[j] == "\\" and j + 1 < n:
                        val.append(line[j:j + 2] if line[j + 1] not in '"\\' else line[j + 1])
                        j += 2
                    else:
                        val.append(line[j])
                        j += 1
                j += 1
                out[key] = "".join(val)
            else:
                k = j
                while k < n and line[k] != " ":
                    k += 1
                out[key] = line[j:k]
                j = k
        else:
            words.append(key)
        i = j
    if words:
        out.setdefault("event", words[0])
    return out


def config_text(listen_port, servers, *, log="stderr text", globals_=(),
                upstream=(), listen=(), forward="none", connect_timeout="2s"):
    lines = ["log %s" % log]
    lines += list(globals_)
    if not any(g.startswith("shutdown_grace") for g in globals_):
        # keeps teardown quick when a test leaves a session stuck
        lines.append("shutdown_grace 2s")
    lines.append("upstream mta {")
    for s in servers:
        lines.append("    server %s" % s)
    lines.append("    forward %s" % forward)
    lines.append("    timeout connect %s" % connect_timeout)
    lines += ["    " + u for u in upstream]
    lines.append("}")
    lines.append("listen 127.0.0.1:%d {" % listen_port)
    lines.append("    upstream mta")
    lines += ["    " + l for l in listen]
    lines.append("}")
    return "\n".join(lines) + "\n"


class GateError(Exception):
    pass


class Gate:
    def __init__(self, config, port=None, tmpdir=None):
        """config: full config text, or a callable(port) -> text."""
        self.dir = tmpdir or mkdtemp("sgit-gate-")
        self.port = port or free_port()
        self.conf = os.path.join(self.dir, "smtpgate.conf")
        text = config(self.port) if callable(config) else config
        with open(self.conf, "w") as f:
            f.write(text)
        self.logpath = os.path.join(self.dir, "stderr.log")
        self.outpath = os.path.join(self.dir, "stdout.log")
        self.proc = None
        self.returncode = None
        self.stop_seconds = None    # how long the final SIGTERM took
        self.nofile = None          # RLIMIT_NOFILE for the process, when set

    @staticmethod
    def env():
        env = dict(os.environ)
        if ASAN:
            env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
            env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        return env

    def start(self, timeout=10.0):
        if not os.access(BINARY, os.X_OK):
            raise GateError("smtpgate binary not found: %s" % BINARY)
        self.logf = open(self.logpath, "wb")
        self.outf = open(self.outpath, "wb")
        preexec = None
        if self.nofile:
            import resource
            n = self.nofile
            preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        self.proc = subprocess.Popen([BINARY, "-c", self.conf], stdout=self.outf,
                                     stderr=self.logf, stdin=subprocess.DEVNULL,
                                     env=self.env(), preexec_fn=preexec)
        _track(self.proc)
        ok = wait_until(lambda: self.proc.poll() is not None or is_listening(self.port), timeout)
        if self.proc.poll() is not None or not ok:
            rc = self.stop()
            raise GateError("smtpgate did not start listening on %d (rc=%s); log:\n%s"
                            % (self.port, rc, self.log_text()[-3000:]))
        return self

    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        _untrack(self.proc)
        self.returncode = self.proc.returncode
        return self.returncode

    def stop(self, timeout=15.0):
        if self.proc is None:
            return None
        t0 = time.monotonic()
        already = self.proc.poll() is not None
        rc = stop_process(self.proc, signal.SIGTERM, timeout)
        if not already and self.stop_seconds is None:
            self.stop_seconds = time.monotonic() - t0
        self.returncode = rc
        for f in (getattr(self, "logf", None), getattr(self, "outf", None)):
            try:
                f.close()
            except Exception:
                pass
        return rc

    def log_bytes(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def log_text(self):
        return self.log_bytes().decode("utf-8", "replace")

    def log_lines(self):
        return [l for l in self.log_text().split("\n") if l]

    def sanitizer_errors(self):
        t = self.log_text()
        return [l for l in t.split("\n") if "ERROR: AddressSanitizer" in l
                or "runtime error:" in l or "ERROR: LeakSanitizer" in l]

    def events(self, event=None, fmt="text"):
        out = []
        for l in self.log_lines():
            if fmt == "json":
                try:
                    d = json.loads(l)
                except ValueError:
                    continue
            else:
                if not l.startswith("session="):
                    continue
                d = parse_text_log_line(l)
            if event is None or d.get("event") == event:
                out.append(d)
        return out

    def wait_event(self, event, n=1, timeout=10.0, fmt="text", pred=None):
        def ok():
            ev = [e for e in self.events(event, fmt) if pred is None or pred(e)]
            return ev if len(ev) >= n else None
        return wait_until(ok, timeout) or [e for e in self.events(event, fmt)
                                          if pred is None or pred(e)]

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_binary(args, timeout=20):
    return subprocess.run([BINARY] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, env=Gate.env())


# ---------------------------------------------------------------------------
# Postfix (a private instance)

class PostfixError(Exception):
    pass


class Postfix:
    """A private Postfix: smtpd on `port` (XCLIENT allowed from 127/8) and on
    `proxy_port` (smtpd_upstream_proxy_protocol = haproxy).  Mail for
    test.example is accepted and handed to discard(8) ("held")."""

    def __init__(self):
        self.dir = mkdtemp("sgit-pf-")
        self.etc = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.maillog = os.path.join(self.dir, "maillog")
        for d in (self.etc, self.queue, self.data):
            os.makedirs(d)
        shutil.chown(self.data, user="postfix")
        self.port = free_port()
        self.proxy_port = free_port()
        while self.proxy_port == self.port:
            self.proxy_port = free_port()
        self.name = "sgitpf%d" % self.port
        self.started = False

    def _write_config(self):
        main = """\
compatibility_level = 3.6
queue_directory = {q}
data_directory = {d}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
syslog_name = {name}
myhostname = pf.test.example
mydomain = test.example
myorigin = pf.test.example
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
relay_domains = test.example
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
default_transport = discard:held
relay_transport = discard:held
local_transport = discard:held
maillog_file = {log}
maillog_file_prefixes = {dir}
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_peername_lookup = no
disable_dns_lookups = yes
smtp_dns_support_level = disabled
alias_maps =
alias_database =
biff = no
""".format(q=self.queue, d=self.data, name=self.name, log=self.maillog, dir=self.dir)
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(main)
        with open("/usr/share/postfix/master.cf.dist") as f:
            dist = f.read().split("\n")
        out = []
        for l in dist:
            if l.startswith("smtp      inet"):
                continue
            # no chroot: a private instance has no populated chroot jail
            m = re.match(r"^(\S+\s+(?:unix|inet|fifo|pass|unix-dgram)\s+\S+\s+\S+\s+)y(\s.*)$", l)
            if m:
                l = m.group(1) + "n" + m.group(2)
            out.append(l)
        out.append("127.0.0.1:%d inet n - n - - smtpd" % self.port)
        out.append("127.0.0.1:%d inet n - n - - smtpd -o smtpd_upstream_proxy_protocol=haproxy"
                   % self.proxy_port)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write("\n".join(out) + "\n")

    def start(self, timeout=30):
        self._write_config()
        try:
            r = subprocess.run([POSTFIX, "-c", self.etc, "start"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=timeout, text=True,
                               errors="replace")
        except subprocess.TimeoutExpired:
            self.stop()
            raise PostfixError("postfix start timed out")
        self.started = True
        if r.returncode != 0:
            log = self.log_text()
            self.stop()
            raise PostfixError("postfix start failed rc=%d: %s %s" % (r.returncode, r.stdout, log[-2000:]))
        if not wait_until(lambda: is_listening(self.port) and is_listening(self.proxy_port), 15):
            log = self.log_text()
            self.stop()
            raise PostfixError("postfix smtpd not listening; maillog: %s" % log[-2000:])
        return self

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        if not self.started:
            return
        pid = self.master_pid()
        try:
            subprocess.run([POSTFIX, "-c", self.etc, "stop"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=20)
        except subprocess.TimeoutExpired:
            pass
        if pid:
            def gone():
                try:
                    os.kill(pid, 0)
                    return False
                except OSError:
                    return True
            if not wait_until(gone, 10):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.started = False

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self):
        try:
            with open(self.maillog, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, regex, timeout=15):
        r = re.compile(regex)
        return wait_until(lambda: r.search(self.log_text()), timeout)


# ---------------------------------------------------------------------------
# Test base class

class GateTestCase(unittest.TestCase):
    """Starts peers and gates with cleanups; under --asan checks each gate's
    stderr for sanitizer reports after it exits."""

    maxDiff = 2000

    def setUp(self):
        self._gates = []

    def start_sink(self, *extra):
        s = Sink(extra)
        self.addCleanup(s.cleanup)
        return s.start()

    def start_recorder(self, **kw):
        r = RecordingMTA(**kw)
        self.addCleanup(r.stop)
        return r.start()

    def start_gate(self, config, port=None, start=True):
        g = Gate(config, port=port)
        self.addCleanup(self._finish_gate, g)
        self._gates.append(g)
        if start:
            g.start()
        return g

    def gate_for(self, servers, **kw):
        """Start a gate with config_text(listen, servers, **kw)."""
        return self.start_gate(lambda p: config_text(p, servers, **kw))

    # a test may set this to False when it deliberately ends smtpgate otherwise
    check_clean_exit = True

    def _finish_gate(self, g):
        rc = g.stop()
        try:
            if self.check_clean_exit and g.proc is not None and rc != 0:
                # SPEC 1: SIGTERM -> finish within shutdown_grace (2s here unless
                # the test says otherwise), then exit 0.  A crash, or a hang
                # that needed SIGKILL (rc -9), fails the test that caused it.
                self.fail("smtpgate exit status %r (SIGTERM sent: %s, %.1fs to exit); log tail:\n%s"
                          % (rc, g.stop_seconds is not None, g.stop_seconds or 0,
                             g.log_text()[-1500:]))
            if ASAN:
                errs = g.sanitizer_errors()
                if errs:
                    self.fail("sanitizer report in smtpgate stderr:\n%s\n%s"
                              % ("\n".join(errs), g.log_text()[-4000:]))
        finally:
            shutil.rmtree(g.dir, ignore_errors=True)

    def client(self, port, **kw):
        c = SMTPClient(port, **kw)
        self.addCleanup(c.close)
        return c

    def greet(self, port, ehlo="client.test", **kw):
        c = self.client(port, **kw)
        r = c.read_reply()
        self.assertEqual(r.code, 220, r)
        r = c.cmd("EHLO " + ehlo)
        self.assertEqual(r.code, 250, r)
        return c

"""TLS helpers for the integration tests: a throw-away PKI made with the
openssl CLI, ssl contexts that trust it, a TLS-capable private Postfix, and
small wrappers around `openssl s_client`.

Everything here is bounded in time; every process started is stopped by PID.
"""

import os
import shutil
import socket
import ssl
import subprocess
import time

from harness import Postfix, SMTPClient, mkdtemp, _track, _untrack  # noqa: F401

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _run(args, cwd):
    r = subprocess.run([OPENSSL] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30, text=True, errors="replace")
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed (rc=%d): %s" % (" ".join(args), r.returncode, r.stdout))
    return r.stdout


class PKI:
    """A CA and server certificates signed by it, in a temp directory
    (ECDSA P-256 keys: quick to make, understood by every peer used here).

    ca        - CA certificate (PEM)
    cert, key - server certificate (SAN IP:127.0.0.1, DNS:localhost) and key
    other_ca  - an unrelated CA (for "wrong ca" tests)
    other_key - a key that does not match `cert`
    """

    def __init__(self):
        self.dir = mkdtemp("sgit-pki-")   # 0755: Postfix and others may read
        d = self.dir
        self.ca, self.ca_key = self._ca("ca", "smtpgate test CA")
        self.other_ca, self.other_ca_key = self._ca("otherca", "unrelated test CA")
        self.cert, self.key = self._leaf("server", "localhost", "ca")
        self.other_key = os.path.join(d, "other.key")
        _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", self.other_key], d)
        for f in os.listdir(d):
            os.chmod(os.path.join(d, f), 0o644)

    def _ca(self, name, cn):
        d = self.dir
        crt, key = os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
        _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key, "-out", crt,
              "-days", "3", "-subj", "/CN=%s" % cn,
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
        return crt, key

    def _leaf(self, name, cn, ca, san="IP:127.0.0.1,DNS:localhost"):
        d = self.dir
        crt, key, csr = (os.path.join(d, name + x) for x in (".pem", ".key", ".csr"))
        ext = os.path.join(d, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=%s\n"
                    "subjectKeyIdentifier=hash\n"
                    "authorityKeyIdentifier=keyid,issuer\n" % san)
        _run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key, "-out", csr,
              "-subj", "/CN=%s" % cn], d)
        _run(["x509", "-req", "-in", csr, "-CA", os.path.join(d, ca + ".pem"),
              "-CAkey", os.path.join(d, ca + ".key"), "-CAcreateserial", "-out", crt,
              "-days", "3", "-extfile", ext], d)
        return crt, key

    def client_context(self, ca=None):
        """A client context trusting our CA (hostname checked: use
        server_hostname '127.0.0.1' or 'localhost')."""
        ctx = ssl.create_default_context(cafile=ca or self.ca)
        return ctx

    def tls_block(self, cert=None, key=None, extra=()):
        lines = ["certificate %s" % (cert or self.cert), "key %s" % (key or self.key)]
        lines += list(extra)
        return "tls { " + "; ".join(lines) + " }"

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


_shared_pki = None


def shared_pki():
    """One PKI for the whole test run (generating keys costs time); it is
    removed when the interpreter exits."""
    global _shared_pki
    if _shared_pki is None:
        import atexit
        _shared_pki = PKI()
        atexit.register(_shared_pki.cleanup)
    return _shared_pki


# ---------------------------------------------------------------------------
# TLS on top of the harness's raw SMTP client

def starttls_wrap(client, ctx, server_hostname="localhost", timeout=10.0,
                  suppress_ragged_eofs=True):
    """Upgrade an SMTPClient's socket to TLS in place (after the 220 to
    STARTTLS was read).  Any bytes already buffered are left in client.buf so
    the caller can assert on them."""
    client.sock.settimeout(timeout)
    client.sock = ctx.wrap_socket(client.sock, server_hostname=server_hostname,
                                  suppress_ragged_eofs=suppress_ragged_eofs)
    return client


def implicit_client(port, ctx, server_hostname="localhost", timeout=10.0,
                    suppress_ragged_eofs=True):
    """An SMTPClient whose connection is TLS from the first byte."""
    c = SMTPClient.__new__(SMTPClient)
    c.timeout = timeout
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        c.sock = ctx.wrap_socket(raw, server_hostname=server_hostname,
                                 suppress_ragged_eofs=suppress_ragged_eofs)
    except Exception:
        raw.close()
        raise
    c.buf = b""
    c.eof = False
    c.received = b""
    return c


def read_tls_close(sock, timeout=5.0):
    """After the server's last reply: read until the TLS connection ends.
    Returns (how, data): how is "close_notify" (clean TLS closure),
    "eof" (TCP closed without close_notify), "reset" or "timeout".
    The socket must have been wrapped with suppress_ragged_eofs=False."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        rem = deadline - time.monotonic()
        if rem <= 0:
            return "timeout", data
        sock.settimeout(rem)
        try:
            d = sock.recv(65536)
        except ssl.SSLZeroReturnError:
            return "close_notify", data
        except ssl.SSLEOFError:
            return "eof", data
        except (socket.timeout, TimeoutError):
            return "timeout", data
        except ConnectionResetError:
            return "reset", data
        if not d:
            return "close_notify", data
        data += d


def ehlo_keywords(reply):
    return [l[4:].split(" ")[0].upper() for l in reply.lines[1:]]


# ---------------------------------------------------------------------------
# openssl s_client driven through stdin

def s_client(port, ca, script, starttls=False, timeout=15.0, pause=0.3):
    """Run `openssl s_client -crlf` (optionally -starttls smtp) against
    127.0.0.1:port, feeding `script` (list of lines) one by one with a pause
    in between, and return (returncode, stdout, stderr)."""
    args = [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port, "-crlf",
            "-CAfile", ca, "-verify_return_error", "-verify_ip", "127.0.0.1",
            "-ign_eof"]
    if starttls:
        args += ["-starttls", "smtp", "-name", "client.test"]
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    _track(p)
    try:
        deadline = time.monotonic() + timeout
        time.sleep(pause * 2)           # let the handshake finish
        for line in script:
            if p.poll() is not None or time.monotonic() > deadline:
                break
            try:
                p.stdin.write(line.encode() + b"\n")
                p.stdin.flush()
            except OSError:
                break
            time.sleep(pause)
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate(timeout=5)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)
        _untrack(p)
    return p.returncode, out.decode("latin-1"), err.decode("latin-1")


# ---------------------------------------------------------------------------
# A private Postfix that offers STARTTLS with our certificate

class TLSPostfix(Postfix):
    """extra_smtpd: {name: (cert, key)} - more smtpd ports, each presenting
    its own certificate; their ports are in self.extra_ports[name]."""

    def __init__(self, pki, extra_smtpd=None):
        super().__init__()
        self.pki = pki
        self.extra_smtpd = dict(extra_smtpd or {})
        self.extra_ports = {}
        from harness import free_port
        used = {self.port, self.proxy_port}
        for name in self.extra_smtpd:
            p = free_port()
            while p in used:
                p = free_port()
            used.add(p)
            self.extra_ports[name] = p

    def _write_config(self):
        super()._write_config()
        with open(os.path.join(self.etc, "main.cf"), "a") as f:
            f.write("smtpd_tls_security_level = may\n"
                    "smtpd_tls_cert_file = %s\n"
                    "smtpd_tls_key_file = %s\n"
                    "smtpd_tls_loglevel = 1\n"
                    "smtpd_tls_received_header = yes\n"
                    % (self.pki.cert, self.pki.key))
        with open(os.path.join(self.etc, "master.cf"), "a") as f:
            for name, (cert, key) in self.extra_smtpd.items():
                f.write("127.0.0.1:%d inet n - n - - smtpd -o smtpd_tls_cert_file=%s "
                        "-o smtpd_tls_key_file=%s\n" % (self.extra_ports[name], cert, key))

"""Integration test harness: the real cbagate binary and the mock Exchange on loopback.

Every process is started by the test on ports chosen at run time (port 0, learned from the
--ready-file each program writes once bound) and stopped by its PID. Waits are bounded polls.

Environment (set by tests/integration/CMakeLists.txt):
  CBAGATE_BIN        the cbagate executable
  MOCK_EXCHANGE_BIN  the mock-exchange executable
  CBAGATE_TEST_PKI   a PKI made by certs-dev/make-pki (see /certs-dev/README.md)
"""
import functools
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

BIN = os.environ.get("CBAGATE_BIN", "")
MOCK = os.environ.get("MOCK_EXCHANGE_BIN", "")
PKI = os.environ.get("CBAGATE_TEST_PKI", "")

ROUTES_DEFAULT = [
    {"prefix": "/owa", "client_cert": "require"},
    {"prefix": "/ecp", "client_cert": "require"},
    {"prefix": "/Microsoft-Server-ActiveSync", "client_cert": "require", "response_timeout": 3660},
    {"prefix": "/owa/healthcheck.htm", "client_cert": "none"},
    {"prefix": "/public", "client_cert": "none"},
    {"prefix": "/mock", "client_cert": "optional"},
]


def wait_until(predicate, timeout=15.0, what="condition"):
    """Polls predicate() until it is truthy or the deadline passes (bounded, never forever)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def read_ready(path, proc, name):
    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited early with {proc.returncode}")
        try:
            with open(path) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
    return wait_until(ready, what=f"{name} ready file")


@functools.cache
def build_sanitizer():
    """The sanitizers cbagate was built with: PROXY_SANITIZER of the build tree it comes from
    ("" for none, "address,undefined" for tests/run --asan, "thread" for tests/run --tsan), read
    from the CMakeCache.txt above BIN; for a binary outside a build tree, from the sanitizer
    runtime it links (ldd)."""
    d = os.path.dirname(os.path.abspath(BIN)) if BIN else ""
    while d and d != os.path.dirname(d):
        cache = os.path.join(d, "CMakeCache.txt")
        if os.path.isfile(cache):
            with open(cache) as f:
                for line in f:
                    if line.startswith("PROXY_SANITIZER:"):
                        return line.split("=", 1)[1].strip()
            return ""
        d = os.path.dirname(d)
    try:
        out = subprocess.run(["ldd", BIN], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return ",".join(n for n, lib in (("address", "libasan"), ("thread", "libtsan")) if lib in out)


def sanitized_build():
    """True when cbagate was built with AddressSanitizer (tests/run --asan): its quarantine
    keeps freed memory, so memory bounds say nothing there and are not asserted."""
    return "address" in build_sanitizer()


def tsan_build():
    """True when cbagate was built with ThreadSanitizer (tests/run --tsan): every memory access
    is instrumented (5-15 times slower) and shadow memory and per-thread traces add to the RSS."""
    return "thread" in build_sanitizer()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def dead_port():
    """A loopback TCP port with nothing listening (bound to port 0, then closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def admin_get(proxy, path):
    """(status, body text) of a GET on the proxy's admin listener."""
    return admin_get_at(proxy.admin, path)


def admin_get_at(admin, path):
    """(status, body text) of a GET on an admin listener (admin = "host:port")."""
    host, port = admin.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def metric(admin, name):
    """The value of an unlabeled metric in the proxy's /metrics (admin = "host:port")."""
    _, text = admin_get_at(admin, "/metrics")
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return float(parts[1])
    raise AssertionError(f"metric {name} not in /metrics")


def mock_stats(mock):
    """The mock's /mock/stats (held Pings, open connections, ...), asked directly, not through
    the proxy."""
    host, port = mock.http.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/mock/stats")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


_names = itertools.count(1)


def unique_name():
    """A file-name stem unique in this test process. id(obj) is not: a stopped Proxy's id comes
    back for the next one, whose stale ready file then names a dead port."""
    return f"{os.getpid()}-{next(_names)}"


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


class Process:
    """A child process we started; stopped by PID only."""

    def __init__(self, args, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()
        return self.proc.returncode

    def output(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Mock:
    def __init__(self, workdir, tls=False, heartbeat_cap=None, extra_args=()):
        self.uid = unique_name()
        self.dir = workdir
        self.ready_file = os.path.join(workdir, f"mock-{self.uid}.ready")
        self.request_log = os.path.join(workdir, f"mock-{self.uid}.jsonl")
        args = [MOCK, "--listen", "127.0.0.1:0", "--ready-file", self.ready_file,
                "--request-log", self.request_log]
        if tls:
            args += ["--tls-listen", "127.0.0.1:0", "--cert", os.path.join(PKI, "backend-chain.pem"),
                     "--key", os.path.join(PKI, "backend.key")]
        if heartbeat_cap is not None:
            args += ["--ping-heartbeat-cap", str(heartbeat_cap)]
        args += list(extra_args)
        self.process = Process(args, os.path.join(workdir, f"mock-{self.uid}.out"))
        try:
            ready = read_ready(self.ready_file, self.process.proc, "mock-exchange")
        except BaseException:
            self.process.stop()  # never leave a child running when start-up fails
            raise
        self.http = ready["http"][0]
        self.https = ready.get("https", [None])[0] if ready.get("https") else None

    def requests(self):
        """Every request the backend received, as recorded by the mock (one JSON per line)."""
        out = []
        try:
            with open(self.request_log) as f:
                for line in f:
                    # A last line without its newline is still being written: not read yet.
                    if not line.endswith("\n"):
                        break
                    line = line.strip()
                    if line:
                        rec = json.loads(line)
                        # The harness's own barrier requests (backend_barrier) are not the
                        # proxy's traffic.
                        if "?barrier" not in (rec.get("target") or ""):
                            out.append(rec)
        except FileNotFoundError:
            pass
        return out

    def all_requests(self):
        """Every logged request, the harness's barriers included."""
        out = []
        with open(self.request_log) as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # still being written
                if line.strip():
                    out.append(json.loads(line))
        return out

    def stop(self):
        return self.process.stop()


class Proxy:
    """cbagate with a generated configuration."""

    def __init__(self, workdir, upstreams, routes=None, sections=None, extra_toml=""):
        self.uid = unique_name()
        self.dir = workdir
        self.config_path = os.path.join(workdir, f"cbagate-{self.uid}.toml")
        self.ready_file = os.path.join(workdir, f"cbagate-{self.uid}.ready")
        self.access_log = os.path.join(workdir, f"access-{self.uid}.jsonl")
        self.write_config(upstreams, routes, sections, extra_toml)
        self.process = Process([BIN, "-c", self.config_path, "--ready-file", self.ready_file],
                               os.path.join(workdir, f"cbagate-{self.uid}.out"))
        try:
            ready = read_ready(self.ready_file, self.process.proc, "cbagate")
        except BaseException:
            self.process.stop()  # never leave a child running when start-up fails
            raise
        host, port = ready["listen"][0].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.admin = ready.get("admin")

    def write_config(self, upstreams, routes=None, sections=None, extra_toml=""):
        s = {
            "server": {"listen": ["127.0.0.1:0"], "threads": 2, "admin_listen": "127.0.0.1:0"},
            "tls": {
                "certificate": os.path.join(PKI, "server-chain.pem"),
                "private_key": os.path.join(PKI, "server.key"),
                "client_ca": os.path.join(PKI, "client-roots.pem"),
                "client_intermediates": os.path.join(PKI, "client-intermediates.pem"),
                "crl": [os.path.join(PKI, "crl", "issuing.crl.pem"),
                        os.path.join(PKI, "crl", "root.crl.pem")],
                "client_cert": "request",
            },
            "upstream": {"servers": list(upstreams), "ca": os.path.join(PKI, "upstream-ca.pem")},
            "access_log": {"path": self.access_log},
            "log": {"level": "info"},
        }
        for name, values in (sections or {}).items():
            s.setdefault(name, {}).update(values)
        lines = []
        for name, values in s.items():
            lines.append(f"[{name}]")
            for k, v in values.items():
                lines.append(f"{k} = {toml_value(v)}")
            lines.append("")
        for r in routes if routes is not None else ROUTES_DEFAULT:
            lines.append("[[route]]")
            for k, v in r.items():
                lines.append(f"{k} = {toml_value(v)}")
            lines.append("")
        lines.append(extra_toml)
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines))

    def access_records(self):
        out = []
        try:
            with open(self.access_log) as f:
                for line in f:
                    if not line.endswith("\n"):
                        break  # still being written
                    line = line.strip()
                    if line:
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def wait_access_records(self, n, timeout=10):
        return wait_until(lambda: (r := self.access_records()) and len(r) >= n and r,
                          timeout, f"{n} access-log lines")

    def stop(self):
        return self.process.stop()


def resumable(session, version):
    """A session the client can offer again: a ticket (TLS 1.3 always; TLS 1.2 with
    self-contained tickets), or a session id (TLS 1.2 with the proxy's tls.session_cache)."""
    if session is None:
        return False
    return session.has_ticket or (version == "1.2" and len(session.id) > 0)


def client_context(cert=None, tls_max=None, tls_min=None):
    """A real OpenSSL client context trusting the dev root, presenting `cert` (a name from
    certs-dev's clients/ folder, e.g. "alice"), or none."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(PKI, "ca", "root.pem"))
    ctx.check_hostname = True
    if tls_max:
        ctx.maximum_version = tls_max
    if tls_min:
        ctx.minimum_version = tls_min
    if cert:
        if os.path.isabs(cert):
            ctx.load_cert_chain(cert + "-chain.pem" if not cert.endswith(".pem") else cert)
        else:
            ctx.load_cert_chain(os.path.join(PKI, "clients", f"{cert}-chain.pem"),
                                os.path.join(PKI, "clients", f"{cert}.key"))
    return ctx


class Response:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return f"<Response {self.status} {self.body[:120]!r}>"


class Client:
    """One keep-alive HTTPS connection to the proxy, through http.client (real OpenSSL)."""

    def __init__(self, proxy, cert="alice", timeout=15, ctx=None, server_name="localhost"):
        self.ctx = ctx or client_context(cert)
        self.conn = http.client.HTTPSConnection(proxy.host, proxy.port, context=self.ctx,
                                                timeout=timeout)
        self.server_name = server_name
        if server_name != proxy.host:
            # http.client sends SNI = host; route it to 127.0.0.1 ourselves.
            self.conn._create_connection = self._connect_loopback(proxy)
            self.conn.host = server_name

    @staticmethod
    def _connect_loopback(proxy):
        def create(address, timeout=None, source_address=None):
            return socket.create_connection((proxy.host, proxy.port), timeout)
        return create

    def request(self, method, path, body=None, headers=None):
        self.conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or []):
            self.conn.putheader(k, v)
        if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                        for k, _ in (headers or [])):
            self.conn.putheader("Content-Length", str(len(body)))
        self.conn.endheaders(body)
        r = self.conn.getresponse()
        data = r.read()
        return Response(r.status, r.reason, r.getheaders(), data)

    @property
    def sock(self):
        return self.conn.sock

    def close(self):
        self.conn.close()


def request(proxy, method, path, cert="alice", body=None, headers=None):
    c = Client(proxy, cert)
    try:
        return c.request(method, path, body, headers)
    finally:
        c.close()


def raw_exchange(proxy, data, cert="alice", timeout=10, read_all=True):
    """Sends raw bytes over TLS and returns what comes back until the proxy closes (or timeout)."""
    ctx = client_context(cert)
    with socket.create_connection((proxy.host, proxy.port), timeout=timeout) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(data)
            chunks = []
            try:
                while True:
                    b = t.recv(65536)
                    if not b:
                        break
                    chunks.append(b)
                    if not read_all:
                        break
            except (socket.timeout, ssl.SSLError, ConnectionResetError):
                pass
            return b"".join(chunks)


class RawClient:
    """One TLS connection to the proxy driven byte by byte: send anything (targets http.client
    would refuse, pipelined requests, HTTP/1.0), read responses one at a time, and tell whether
    the proxy closed the connection."""

    def __init__(self, proxy, cert="alice", timeout=10):
        self.ctx = client_context(cert)
        s = socket.create_connection((proxy.host, proxy.port), timeout=timeout)
        self.sock = self.ctx.wrap_socket(s, server_hostname="localhost")
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        try:
            b = self.sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            b = b""
        if not b:
            self.eof = True
            return False
        self.buf += b
        return True

    def _line(self):
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("connection closed inside a response header")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed inside a response body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, head=False):
        """The next response (interim 1xx responses are returned too). Raises EOFError when the
        connection closes before a complete response."""
        status_line = self._line()
        parts = status_line.split(b" ", 2)
        version = parts[0].decode()
        status = int(parts[1])
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            k, v = line.split(b":", 1)
            headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
        r = Response(status, reason, headers, b"")
        r.version = version
        te = (r.header("Transfer-Encoding") or "").lower()
        cl = r.header("Content-Length")
        if head or status < 200 or status in (204, 304):
            return r
        if "chunked" in te:
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exact(size)
                self._exact(2)
            r.body = body
        elif cl is not None:
            r.body = self._exact(int(cl))
        else:
            while self._fill():
                pass
            r.body, self.buf = self.buf, b""
        return r

    def closed_by_peer(self, timeout=5):
        """True when the proxy closes the connection (EOF) within timeout with no more bytes;
        False when it stays open that long (or sends something)."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            b = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return True
        if b:
            self.buf += b
            return False
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    @property
    def client(self):
        """This connection's address as the proxy's access log names it ("ip:port")."""
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"


def status_of(raw):
    """The status code of the first response in raw bytes (0 if none)."""
    try:
        return int(raw.split(b"\r\n", 1)[0].split(b" ")[1])
    except (IndexError, ValueError):
        return 0


class ProxyTestCase(unittest.TestCase):
    """One mock and one proxy per test class (started once: these tests are about behaviour,
    not start-up). Subclasses may set PROXY_SECTIONS, ROUTES, MOCK_ARGS, MOCK_TLS."""

    PROXY_SECTIONS = None
    ROUTES = None
    MOCK_TLS = False
    MOCK_ARGS = ()
    HEARTBEAT_CAP = 1
    UPSTREAM_TLS = False

    @classmethod
    def setUpClass(cls):
        if not (BIN and MOCK and PKI):
            raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-it-")
        cls.mock = Mock(cls.tmp, tls=cls.MOCK_TLS or cls.UPSTREAM_TLS, heartbeat_cap=cls.HEARTBEAT_CAP,
                        extra_args=cls.MOCK_ARGS)
        try:
            cls.proxy = Proxy(cls.tmp, cls.upstream_servers(), routes=cls.ROUTES,
                              sections=cls.PROXY_SECTIONS)
        except BaseException:
            # tearDownClass does not run when setUpClass fails: stop the mock here.
            cls.mock.stop()
            raise

    @classmethod
    def mock_url(cls):
        """The mock's URL as the proxy reaches it (https:// when UPSTREAM_TLS)."""
        return f"https://{cls.mock.https}" if cls.UPSTREAM_TLS else f"http://{cls.mock.http}"

    @classmethod
    def upstream_servers(cls):
        """upstream.servers of the proxy; override to add servers (e.g. dead_server_url())."""
        return [cls.mock_url()]

    @classmethod
    def tearDownClass(cls):
        failed = False
        for p in ("proxy", "mock"):
            if hasattr(cls, p):
                getattr(cls, p).stop()
        if not failed and os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def mark(self):
        """A unique marker to put in a request, to find it (or prove its absence) at the backend."""
        self._n = getattr(self, "_n", 0) + 1
        # The trailing "z" keeps marker 1 from being a substring of marker 12.
        return f"m{os.getpid()}x{id(self)}x{self._n}z"

    def backend_saw(self, marker, expect=1):
        """The mock's records of requests whose target contains marker, once `expect` of them
        have arrived (the mock records a request before it answers it)."""
        def seen():
            found = [r for r in self.mock.requests() if marker in r.get("target", "")]
            return found if len(found) >= expect else None
        try:
            return wait_until(seen, timeout=5, what=f"backend record of {marker}")
        except AssertionError:
            return [r for r in self.mock.requests() if marker in r.get("target", "")]

    def proxy_logged(self, marker):
        """The proxy's access-log record of the request carrying marker (waits for it)."""
        return wait_until(lambda: next((r for r in self.proxy.access_records()
                                        if marker in r.get("query", "") or marker in r.get("path", "")), None),
                          timeout=10, what=f"access-log line of {marker}")

    def access_count(self):
        """How many access-log lines the proxy has written so far."""
        return len(self.proxy.access_records())

    def assertNotForwardedSince(self, marker, access_before, lines=1):
        """Like assertNotForwarded, for requests whose access-log line cannot name the marker
        (a refused target logs no path or query): waits until the proxy has written `lines`
        more access-log lines than access_before, then checks the backend never saw marker."""
        wait_until(lambda: self.access_count() >= access_before + lines, timeout=10,
                   what=f"{lines} more access-log line(s)")
        self.backend_barrier()
        found = [r for r in self.mock.requests() if marker in (r.get("target") or "")]
        self.assertEqual(found, [], f"request {marker} reached the backend")

    def proxy_logged_client(self, client, n=1, timeout=10):
        """The proxy's access-log records of one client connection (RawClient.client), once
        there are at least n of them: for requests refused before their target is known."""
        return wait_until(lambda: (r := [x for x in self.proxy.access_records()
                                         if x.get("client") == client]) and len(r) >= n and r,
                          timeout, f"{n} access-log line(s) of {client}")

    def backend_barrier(self):
        """Returns once the mock has logged every request it finished before now. The mock
        (one I/O thread by default) writes a request's log line right after its response; a
        request sent to it directly afterwards is logged after that line."""
        mock_barrier(self.mock)

    def assertNotForwarded(self, marker):
        # The proxy writes its access-log line after the exchange ends, i.e. after the mock has
        # answered a forwarded request; the barrier then makes sure the mock's log line of such
        # a request has been written before we look for it.
        self.proxy_logged(marker)
        self.backend_barrier()
        found = [r for r in self.mock.requests() if marker in r.get("target", "")]
        self.assertEqual(found, [], f"request {marker} reached the backend")


# ---- Revocation (issue 5): a CDP server, an OCSP responder, a PKI that points at them --------
# Added by the revocation test side. Both servers are real HTTP/1.1 servers on 127.0.0.1 at a
# port chosen at run time, run by threads of the test process; they count requests per path,
# can go down (listener and open connections closed) and up again on the same port, hold their
# answers back (to make concurrent first requests meet) and fail on purpose.
import base64  # noqa: E402  (kept with the code that uses it: this block is appended)
import collections  # noqa: E402
import http.server  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
import urllib.parse  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_PKI = os.path.join(REPO_ROOT, "certs-dev", "make-pki")
REVOKE = os.path.join(REPO_ROOT, "certs-dev", "revoke")


class LoopbackHttpServer:
    """A small HTTP/1.1 server on 127.0.0.1 (threads of this process). Subclasses implement
    answer(method, path, body) -> (status, content_type, bytes).

    counts[path] counts every request (counted on arrival, before any hold); fail = None (answer),
    an int (that HTTP status, empty body), "garbage" (200 with bytes that are not DER), "close"
    (close the connection without an answer) or "hang" (never answer until down())."""

    HOLD_LIMIT = 30.0  # the longest a held or hanging answer waits (bounded even if a test forgets)

    def __init__(self, port=0):
        self.port = port
        self.counts = collections.Counter()
        self.fail = None
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._gate.set()
        self._stopping = threading.Event()
        self._conns = set()
        self._server = None
        self._thread = None
        self.up()

    # -- life cycle
    def up(self):
        """Starts listening (again) on self.port (port 0 the first time: chosen by the OS)."""
        if self._server is not None:
            return
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with owner._lock:
                    owner._conns.add(self.connection)

            def finish(self):
                try:
                    super().finish()
                finally:
                    with owner._lock:
                        owner._conns.discard(self.connection)

            def log_message(self, *args):
                pass

            def _serve(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path
                with owner._lock:
                    owner.counts[path.split("?", 1)[0]] += 1
                owner._gate.wait(owner.HOLD_LIMIT)
                fail = owner.fail
                if fail == "hang":
                    owner._stopping.wait(owner.HOLD_LIMIT)
                    self.close_connection = True
                    return
                if fail == "close":
                    self.close_connection = True
                    return
                if isinstance(fail, int):
                    status, ctype, data = fail, "text/plain", b""
                elif fail == "garbage":
                    status, ctype, data = 200, "application/octet-stream", b"\x30\x03not DER at all"
                else:
                    status, ctype, data = owner.answer(method, path, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_HEAD(self):
                self._serve("HEAD")

            def do_POST(self):
                self._serve("POST")

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._stopping.clear()
        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def down(self):
        """Stops listening and cuts every open connection (a fetch then fails to connect)."""
        if self._server is None:
            return
        self._stopping.set()
        self._gate.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=10)
        self._server = None

    stop = down

    @property
    def is_up(self):
        return self._server is not None

    # -- test controls
    def hold(self):
        """Answers wait (at most HOLD_LIMIT s) until release()."""
        self._gate.clear()

    def release(self):
        self._gate.set()

    def count(self, path=None):
        """Requests seen for path ("/issuing.crl"), or for all paths."""
        with self._lock:
            return self.counts[path] if path else sum(self.counts.values())

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, method, path, body):
        raise NotImplementedError


class CdpServer(LoopbackHttpServer):
    """Serves the files of `directory` (GET /<name>, no sub-directories) as CRLs, e.g. the
    crl/ folder of a make-pki --cdp-base PKI: /issuing.crl and /root.crl (DER). override[path]
    = bytes serves other content for a path (a corrupt or huge CRL)."""

    def __init__(self, directory, port=0):
        self.directory = directory
        self.override = {}
        super().__init__(port)

    def answer(self, method, path, body):
        path = path.split("?", 1)[0]
        if path in self.override:
            return 200, "application/pkix-crl", self.override[path]
        name = path.lstrip("/")
        if method not in ("GET", "HEAD") or not name or "/" in name or name.startswith("."):
            return 404, "text/plain", b"not found\n"
        try:
            with open(os.path.join(self.directory, name), "rb") as f:
                return 200, "application/pkix-crl", f.read()
        except OSError:
            return 404, "text/plain", b"not found\n"


class OcspResponder(LoopbackHttpServer):
    """An OCSP responder: every request (POST of the DER request, or GET /<base64>) is answered
    by `openssl ocsp -index INDEX -CA CA -rsigner RSIGNER -rkey RKEY -reqin ... -respout ...`.

    Why not `openssl ocsp -port` as a server: OpenSSL 3.0's -port takes a number only and binds
    every address (*:port), not 127.0.0.1; it also reads index.txt once. Here the HTTP side is
    ours (loopback only, counted, can go down) and openssl builds and signs each answer from the
    current index.txt, so a certificate revoked with certs-dev/revoke is revoked for the very
    next OCSP request. ndays / nmin: nextUpdate of the answers (None and None: no nextUpdate)."""

    def __init__(self, index, ca, rsigner, rkey, ndays=1, nmin=None, port=0):
        self.index, self.ca, self.rsigner, self.rkey = index, ca, rsigner, rkey
        self.ndays, self.nmin = ndays, nmin
        self.errors = []  # openssl's stderr of failed answers
        super().__init__(port)

    def answer(self, method, path, body):
        if method == "GET":
            try:
                body = base64.b64decode(urllib.parse.unquote(path.rsplit("/", 1)[-1]))
            except ValueError:
                return 400, "text/plain", b"bad request\n"
        elif method != "POST":
            return 405, "text/plain", b""
        with tempfile.TemporaryDirectory(prefix="ocsp-") as d:
            req, resp = os.path.join(d, "req.der"), os.path.join(d, "resp.der")
            with open(req, "wb") as f:
                f.write(body)
            args = ["openssl", "ocsp", "-index", self.index, "-CA", self.ca, "-rsigner", self.rsigner,
                    "-rkey", self.rkey, "-reqin", req, "-respout", resp]
            if self.ndays is not None:
                args += ["-ndays", str(self.ndays)]
            if self.nmin is not None:
                args += ["-nmin", str(self.nmin)]
            r = subprocess.run(args, capture_output=True, timeout=30,
                               env=dict(os.environ, SSL_CERT_FILE="/dev/null"))
            if r.returncode != 0 or not os.path.exists(resp):
                self.errors.append(r.stderr.decode("utf-8", "replace"))
                return 500, "text/plain", b"openssl ocsp failed\n"
            with open(resp, "rb") as f:
                return 200, "application/ocsp-response", f.read()


class RevocationPki:
    """A make-pki PKI (in a temp dir) whose certificates point at servers of this process:
    - cdp: CdpServer over pki/crl, the leaves' CDP http://127.0.0.1:P1/issuing.crl and the
      issuing CA's http://127.0.0.1:P1/root.crl;
    - ocsp: OcspResponder for the issuing CA's leaves (AIA of the leaves, P2), signed by
      ocsp/responder.pem (EKU OCSPSigning, noCheck);
    - ocsp_ca: OcspResponder for the issuing CA itself (AIA of the issuing CA, P3), signed by the
      root's own key.
    The servers are bound first (ports chosen by the OS), then make-pki writes their URLs into
    the certificates (about 1.5 s). stop() stops the servers and deletes the directory."""

    def __init__(self, parent=None):
        self.tmp = tempfile.mkdtemp(prefix="cbagate-rev-", dir=parent)
        self.dir = os.path.join(self.tmp, "pki")
        p = self.path
        self.cdp = CdpServer(p("crl"))
        self.ocsp = OcspResponder(p("ca/db/issuing/index.txt"), p("ca/issuing.pem"),
                                  p("ocsp/responder.pem"), p("ocsp/responder.key"))
        self.ocsp_ca = OcspResponder(p("ca/db/root/index.txt"), p("ca/root.pem"),
                                     p("ca/root.pem"), p("ca/root.key"))
        try:
            r = subprocess.run([MAKE_PKI, "--cdp-base", self.cdp.url(), "--ocsp-url", self.ocsp.url("/"),
                                "--ocsp-ca-url", self.ocsp_ca.url("/"), self.dir],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise AssertionError(f"make-pki failed:\n{r.stdout}\n{r.stderr}")
        except BaseException:
            self.stop()
            raise

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def cert(self, name):
        """The leaf certificate file of a client identity ("alice")."""
        return self.path("clients", f"{name}.pem")

    def servers(self):
        return (self.cdp, self.ocsp, self.ocsp_ca)

    def revoke(self, *names, reason="keyCompromise", next_update=None, last_update=None, crl=None):
        """Revokes client identities (names or certificate paths) with certs-dev/revoke and writes
        the CRLs anew (PEM, DER, the CDP copies). No names: only the CRLs are written again
        (next_update="-1 hour", last_update="-2 days" makes them stale)."""
        args = [REVOKE, "--reason", reason]
        if next_update:
            args += ["--next-update", next_update]
        if last_update:
            args += ["--last-update", last_update]
        for c in ([crl] if isinstance(crl, str) else crl or []):
            args += ["--crl", c]
        args.append(self.dir)
        args += [n if os.path.isabs(n) else self.cert(n) for n in names]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"certs-dev/revoke failed:\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def tls_section(self, crl=(), stapling="off"):
        """[tls] keys for a proxy that uses this PKI; crl = names under crl/ ("issuing.crl.pem").
        OCSP stapling is off unless asked for (None: the key is left out, i.e. the default
        "auto"): server.pem has the leaves' OCSP URL, and a stapling fetch would count as one
        more request to self.ocsp."""
        return {
            "certificate": self.path("server-chain.pem"),
            "private_key": self.path("server.key"),
            "client_ca": self.path("client-roots.pem"),
            "client_intermediates": self.path("client-intermediates.pem"),
            "crl": [self.path("crl", c) for c in crl],
            "client_cert": "request",
            **({"ocsp_stapling": stapling} if stapling else {}),
        }

    def client_context(self, cert="alice"):
        """A client context trusting this PKI's root and presenting client identity `cert`."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.path("ca", "root.pem"))
        if cert:
            ctx.load_cert_chain(self.path("clients", f"{cert}-chain.pem"), self.path("clients", f"{cert}.key"))
        return ctx

    def stop(self):
        for s in (getattr(self, n, None) for n in ("cdp", "ocsp", "ocsp_ca")):
            if s is not None:
                s.down()
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(self.tmp, ignore_errors=True)


class PkiRawClient(RawClient):
    """RawClient with a given client context (e.g. RevocationPki.client_context("bob"))."""

    def __init__(self, proxy, ctx, timeout=10):
        self.ctx = ctx
        s = socket.create_connection((proxy.host, proxy.port), timeout=timeout)
        self.sock = self.ctx.wrap_socket(s, server_hostname="localhost")
        self.buf = b""
        self.eof = False


def metrics_text(proxy):
    """The proxy's admin /metrics page (Prometheus text)."""
    host, port = proxy.admin.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode()
        if r.status != 200:
            raise AssertionError(f"/metrics answered {r.status}")
        return body
    finally:
        conn.close()


_label_re = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_sample(text, name, **labels):
    """The value of the sample of `name` whose labels are exactly `labels` (any order), or None."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head == name and not labels:
            return float(value)
        if head.startswith(name + "{") and head.endswith("}"):
            got = dict(_label_re.findall(head[len(name) + 1:-1]))
            if got == {k: str(v) for k, v in labels.items()}:
                return float(value)
    return None


class RevocationProxyTestCase(ProxyTestCase):
    """ProxyTestCase whose proxy uses a RevocationPki of its own (one per class, in cls.rpki).
    Subclasses set TLS_CRL (names under crl/ for tls.crl), REVOCATION (the [revocation] keys)
    and ROUTES; more proxies with other settings come from self.new_proxy(...)."""

    TLS_CRL = ()
    REVOCATION = {}
    ROUTES = None

    @classmethod
    def setUpClass(cls):
        if not (BIN and MOCK and PKI):
            raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")
        cls.rpki = RevocationPki()
        cls.PROXY_SECTIONS = cls.sections(cls.TLS_CRL, cls.REVOCATION)
        try:
            super().setUpClass()
        except BaseException:
            cls.rpki.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.rpki.stop()

    @classmethod
    def sections(cls, tls_crl=(), revocation=None):
        # watch_interval 0: a test that rewrites the PKI's CRLs must not reload other proxies.
        rev = {"watch_interval": "0s"}
        rev.update(revocation or {})
        return {"tls": cls.rpki.tls_section(tls_crl), "revocation": rev}

    def new_proxy(self, tls_crl=(), revocation=None, routes=None):
        """Another proxy (cold revocation caches) on the class's mock and PKI; stopped at the end
        of the test."""
        p = Proxy(self.tmp, self.upstream_servers(), routes=routes if routes is not None else self.ROUTES,
                  sections=self.sections(tls_crl, revocation))
        self.addCleanup(p.stop)
        return p

    def client(self, cert="alice", proxy=None):
        """A keep-alive Client of `proxy` (default: the class's) presenting this PKI's `cert`."""
        c = Client(proxy or self.proxy, ctx=self.rpki.client_context(cert))
        self.addCleanup(c.close)
        return c

    def get(self, path, cert="alice", proxy=None):
        c = Client(proxy or self.proxy, ctx=self.rpki.client_context(cert))
        try:
            return c.request("GET", path)
        finally:
            c.close()


def mock_barrier(mock):
    """Returns once `mock` has logged every request it finished before now. The mock (one I/O
    thread by default) writes a request's log line right after its response; a request sent to
    it directly afterwards is logged after that line."""
    tag = f"barrier{time.monotonic_ns()}"
    host, port = mock.http.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", f"/mock/status/204?{tag}")
        conn.getresponse().read()
    finally:
        conn.close()
    wait_until(lambda: any(tag in (r.get("target") or "") for r in mock.all_requests()),
               timeout=10, what="the mock's barrier request")

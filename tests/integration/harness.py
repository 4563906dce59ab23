"""Integration test harness: the real cbagate binary and the mock Exchange on loopback.

Every process is started by the test on ports chosen at run time (port 0, learned from the
--ready-file each program writes once bound) and stopped by its PID. Waits are bounded polls.

Environment (set by tests/integration/CMakeLists.txt):
  CBAGATE_BIN        the cbagate executable
  MOCK_EXCHANGE_BIN  the mock-exchange executable
  CBAGATE_TEST_PKI   a PKI made by certs-dev/make-pki (see /certs-dev/README.md)
"""
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


def sanitized_build():
    """True when cbagate was built with AddressSanitizer (tests/run --asan): its quarantine
    keeps freed memory, so memory bounds say nothing there and are not asserted."""
    try:
        out = subprocess.run(["ldd", BIN], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "libasan" in out


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


def metric(admin, name):
    """The value of an unlabeled metric in the proxy's /metrics (admin = "host:port")."""
    host, port = admin.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
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
        tag = f"barrier{time.monotonic_ns()}"
        host, port = self.mock.http.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", f"/mock/status/204?{tag}")
            conn.getresponse().read()
        finally:
            conn.close()
        wait_until(lambda: any(tag in (r.get("target") or "") for r in self.mock.all_requests()),
                   timeout=10, what="the mock's barrier request")

    def assertNotForwarded(self, marker):
        # The proxy writes its access-log line after the exchange ends, i.e. after the mock has
        # answered a forwarded request; the barrier then makes sure the mock's log line of such
        # a request has been written before we look for it.
        self.proxy_logged(marker)
        self.backend_barrier()
        found = [r for r in self.mock.requests() if marker in r.get("target", "")]
        self.assertEqual(found, [], f"request {marker} reached the backend")

"""Integration test harness: the real cbagate binary and the mock Exchange on loopback.

Every process is started by the test on ports chosen at run time (port 0, learned from the
--ready-file each program writes once bound) and stopped by its PID. Waits are bounded polls.

Environment (set by tests/integration/CMakeLists.txt):
  CBAGATE_BIN        the cbagate executable
  MOCK_EXCHANGE_BIN  the mock-exchange executable
  CBAGATE_TEST_PKI   a PKI made by certs-dev/make-pki (see /certs-dev/README.md)
"""
import http.client
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


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


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
        self.dir = workdir
        self.ready_file = os.path.join(workdir, f"mock-{id(self)}.ready")
        self.request_log = os.path.join(workdir, f"mock-{id(self)}.jsonl")
        args = [MOCK, "--listen", "127.0.0.1:0", "--ready-file", self.ready_file,
                "--request-log", self.request_log]
        if tls:
            args += ["--tls-listen", "127.0.0.1:0", "--cert", os.path.join(PKI, "backend-chain.pem"),
                     "--key", os.path.join(PKI, "backend.key")]
        if heartbeat_cap is not None:
            args += ["--ping-heartbeat-cap", str(heartbeat_cap)]
        args += list(extra_args)
        self.process = Process(args, os.path.join(workdir, f"mock-{id(self)}.out"))
        ready = read_ready(self.ready_file, self.process.proc, "mock-exchange")
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
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def stop(self):
        return self.process.stop()


class Proxy:
    """cbagate with a generated configuration."""

    def __init__(self, workdir, upstreams, routes=None, sections=None, extra_toml=""):
        self.dir = workdir
        self.config_path = os.path.join(workdir, f"cbagate-{id(self)}.toml")
        self.ready_file = os.path.join(workdir, f"cbagate-{id(self)}.ready")
        self.access_log = os.path.join(workdir, f"access-{id(self)}.jsonl")
        self.write_config(upstreams, routes, sections, extra_toml)
        self.process = Process([BIN, "-c", self.config_path, "--ready-file", self.ready_file],
                               os.path.join(workdir, f"cbagate-{id(self)}.out"))
        ready = read_ready(self.ready_file, self.process.proc, "cbagate")
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
            "access_log": {"path": os.path.join(self.dir, f"access-{id(self)}.jsonl")},
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
        upstream = (f"https://{cls.mock.https}" if cls.UPSTREAM_TLS
                    else f"http://{cls.mock.http}")
        cls.proxy = Proxy(cls.tmp, [upstream], routes=cls.ROUTES, sections=cls.PROXY_SECTIONS)

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
        return f"m{os.getpid()}x{id(self)}x{self._n}"

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

    def assertNotForwarded(self, marker):
        # The proxy writes its access-log line after the exchange ends; the mock records a
        # request before answering it. So once the proxy's line is there, a forwarded request
        # would already be in the mock's log.
        self.proxy_logged(marker)
        found = [r for r in self.mock.requests() if marker in r.get("target", "")]
        self.assertEqual(found, [], f"request {marker} reached the backend")

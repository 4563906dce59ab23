"""The process around the proxy: --check-config (precise file:line:col errors, binds nothing),
--version/--help, the shipped configurations, start-up failures, SIGHUP reload (good and broken
files), SIGTERM drain, and the admin endpoints."""
import copy
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import admin_get, BIN, MOCK, PKI, ROUTES_DEFAULT, Client, Mock, Proxy, resumable, wait_until
from test_tls import fetch as tls_fetch, pinned

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(REPO, "tests", "mock-exchange", "fixtures")
EAS_HEADERS = [("Content-Type", "application/vnd.ms-sync.wbxml"), ("MS-ASProtocolVersion", "14.1")]


def needs_binaries():
    if not (BIN and MOCK and PKI):
        raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")


def write_config(workdir, sections=None, routes=None, extra_toml="", upstreams=("http://127.0.0.1:9",)):
    """The configuration Proxy would run, written without starting anything; returns its path."""
    p = Proxy.__new__(Proxy)
    p.dir = workdir
    fd, p.config_path = tempfile.mkstemp(dir=workdir, prefix="cbagate-", suffix=".toml")
    os.close(fd)
    p.access_log = p.config_path[:-len(".toml")] + ".access.jsonl"
    p.write_config(list(upstreams), routes, sections, extra_toml)
    return p.config_path


def insert_after(path, anchor, line):
    """Inserts `line` after the first line equal to `anchor`; returns the new line's number (1-based)."""
    with open(path) as f:
        lines = f.read().split("\n")
    at = lines.index(anchor) + 1
    lines.insert(at, line)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return at + 1


def run(*args, timeout=30):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def check(path):
    return run("--check-config", path)


def fetch(proxy, path, cert="alice", timeout=10):
    """One request on a new connection: (status, body)."""
    c = Client(proxy, cert, timeout=timeout)
    try:
        r = c.request("GET", path)
        return r.status, r.body
    finally:
        c.close()


def metric_value(text, name, labels=""):
    """The value of `name{labels}` in Prometheus text, or None."""
    want = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == want:
            return float(parts[1])
    return None


def refuses_connections(proxy):
    try:
        socket.create_connection((proxy.host, proxy.port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False  # queued on a listener as it closed: poll again for a plain refusal


class TempDirCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        needs_binaries()
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-it-")

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)


class CheckConfig(TempDirCase):
    def test_good_config_is_successful(self):
        path = write_config(self.tmp)
        r = check(path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("test is successful", r.stdout)
        self.assertIn(path, r.stdout)
        # The nginx-style spelling -t -c FILE does the same.
        r = run("-t", "-c", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("test is successful", r.stdout)

    def test_unknown_key_names_file_line_and_column(self):
        path = write_config(self.tmp)
        line = insert_after(path, "[server]", 'lissten = ["127.0.0.1:0"]')
        r = check(path)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertRegex(r.stderr, re.escape(f"{path}:{line}:") + r"\d+: server\.lissten:")
        self.assertIn("test failed", r.stderr)
        self.assertNotIn("test is successful", r.stdout)

    def test_wrong_type_names_the_key_and_line(self):
        path = write_config(self.tmp)
        line = insert_after(path, "[server]", 'max_connections = "many"')
        r = check(path)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertRegex(r.stderr, re.escape(f"{path}:{line}:") + r"\d+: server\.max_connections:")

    def test_missing_certificate_file_names_the_path(self):
        missing = os.path.join(self.tmp, "no-such-dir", "server-chain.pem")
        path = write_config(self.tmp, sections={"tls": {"certificate": missing}})
        r = check(path)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn(missing, r.stderr)
        self.assertIn("tls.certificate", r.stderr)

    def test_check_binds_no_socket(self):
        # Hold the configured ports ourselves: a check that binds would fail on them.
        held = []
        try:
            for _ in range(2):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", 0))
                s.listen(1)
                held.append(s)
            traffic, admin = (f"127.0.0.1:{s.getsockname()[1]}" for s in held)
            path = write_config(self.tmp, sections={"server": {"listen": [traffic], "admin_listen": admin}})
            r = check(path)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("test is successful", r.stdout)
            # Control: running that configuration does need the port, and says so.
            r = run("-c", path)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(traffic.rsplit(":", 1)[1], r.stderr)
        finally:
            for s in held:
                s.close()

    def test_version_and_help(self):
        r = run("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^cbagate \d+\.\d+")
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--check-config", r.stdout)
        r = run("--no-such-flag")
        self.assertEqual(r.returncode, 2)

    def test_reference_config_passes_in_a_pki_folder(self):
        pki = os.path.join(self.tmp, "ref-pki")
        shutil.copytree(PKI, pki)
        shutil.copy(os.path.join(REPO, "config", "cbagate.toml"), pki)
        r = check(os.path.join(pki, "cbagate.toml"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("test is successful", r.stdout)

    def test_lab_config_passes_in_the_lab_layout(self):
        root = os.path.join(self.tmp, "lab")
        os.makedirs(os.path.join(root, "config"))
        shutil.copytree(PKI, os.path.join(root, ".lab", "pki"))
        shutil.copy(os.path.join(REPO, "config", "lab.toml"), os.path.join(root, "config"))
        r = check(os.path.join(root, "config", "lab.toml"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("test is successful", r.stdout)


class StartupFailure(TempDirCase):
    def assertStartFails(self, path, *needles):
        try:
            r = run("-c", path, timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("cbagate started with a configuration it must refuse")
        self.assertNotEqual(r.returncode, 0, r.stderr)
        for n in needles:
            self.assertIn(n, r.stderr)

    def test_missing_private_key(self):
        key = os.path.join(self.tmp, "absent.key")
        path = write_config(self.tmp, sections={"tls": {"private_key": key}})
        self.assertStartFails(path, key)

    def test_garbage_private_key(self):
        key = os.path.join(self.tmp, "garbage.key")
        with open(key, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
        os.chmod(key, 0o600)  # refused for its content, not for its mode
        path = write_config(self.tmp, sections={"tls": {"private_key": key}})
        self.assertStartFails(path, key, "private key")

    def test_private_key_readable_by_others(self):
        # Like ssh: a key that group or others may read stops startup, naming the file and mode.
        key = os.path.join(self.tmp, "open.key")
        shutil.copyfile(os.path.join(PKI, "server.key"), key)
        os.chmod(key, 0o644)
        path = write_config(self.tmp, sections={"tls": {"private_key": key}})
        self.assertStartFails(path, f"tls.private_key: {key} is accessible by group or others "
                                    f"(mode 0644); a secret must be readable by its owner only: "
                                    f"chmod 600 {key}")
        self.assertEqual(check(path).returncode, 2)
        os.chmod(key, 0o600)
        self.assertEqual(check(path).returncode, 0, check(path).stderr)

    def test_private_key_of_another_certificate(self):
        key = os.path.join(PKI, "clients", "bob.key")
        path = write_config(self.tmp, sections={"tls": {"private_key": key}})
        self.assertStartFails(path, key)


class Reload(TempDirCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mock = Mock(cls.tmp, heartbeat_cap=1)

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()
        super().tearDownClass()

    def setUp(self):
        self.proxy = Proxy(self.tmp, [f"http://{self.mock.http}"])

    def tearDown(self):
        self.assertEqual(self.proxy.stop(), 0)

    def marker(self):
        self._n = getattr(self, "_n", 0) + 1
        return f"rl{os.getpid()}x{id(self)}x{self._n}"

    def backend_identity(self, marker):
        seen = wait_until(lambda: [r for r in self.mock.requests() if marker in r.get("target", "")],
                          timeout=5, what=f"backend record of {marker}")
        return seen[0]["identity"]

    def reload_and_wait(self, what):
        """Sends SIGHUP and waits for the proxy to say `what` one more time than before."""
        before = self.proxy.process.output().count(what)
        self.proxy.process.signal(signal.SIGHUP)
        wait_until(lambda: self.proxy.process.output().count(what) > before, timeout=10,
                   what=f"'{what}' in the proxy's output")

    def test_sighup_applies_a_changed_route_to_new_connections(self):
        m = self.marker()
        status, body = fetch(self.proxy, f"/owa/?marker={m}", cert=None)
        self.assertEqual(status, 403)
        self.assertIn(b"403.7", body)
        live = Client(self.proxy, None)
        try:
            self.assertEqual(live.request("GET", "/owa/healthcheck.htm").status, 200)
            routes = copy.deepcopy(ROUTES_DEFAULT)
            for r in routes:
                if r["prefix"] == "/owa":
                    r["client_cert"] = "none"
            self.proxy.write_config([f"http://{self.mock.http}"], routes=routes)
            self.reload_and_wait(f"configuration {self.proxy.config_path} loaded")
            m = self.marker()
            status, _ = fetch(self.proxy, f"/owa/?marker={m}", cert=None)
            self.assertEqual(status, 200)
            self.assertIsNone(self.backend_identity(m))
            # A connection opened before the reload keeps the configuration it started with.
            sock = live.sock
            r = live.request("GET", f"/owa/?marker={self.marker()}")
            self.assertIs(live.sock, sock)
            self.assertEqual(r.status, 403, r)
        finally:
            live.close()

    def test_broken_config_on_sighup_is_rejected_and_the_old_one_keeps_serving(self):
        routes = copy.deepcopy(ROUTES_DEFAULT)
        for r in routes:
            if r["prefix"] == "/owa":
                r["client_cert"] = "none"  # would be visible if any of the broken file applied
        self.proxy.write_config([f"http://{self.mock.http}"], routes=routes)
        line = insert_after(self.proxy.config_path, "[server]", 'lissten = ["127.0.0.1:0"]')
        self.reload_and_wait("keeping the running one")
        out = self.proxy.process.output()
        self.assertRegex(out, re.escape(f"{self.proxy.config_path}:{line}:") + r"\d+: server\.lissten:")
        m = self.marker()
        status, body = fetch(self.proxy, f"/owa/?marker={m}", cert=None)
        self.assertEqual(status, 403)
        self.assertIn(b"403.7", body)
        m = self.marker()
        status, _ = fetch(self.proxy, f"/owa/?marker={m}", cert="alice")
        self.assertEqual(status, 200)
        self.assertEqual(self.backend_identity(m), "alice@lab.test")
        # Fixed again, the next SIGHUP loads it.
        self.proxy.write_config([f"http://{self.mock.http}"], routes=routes)
        self.reload_and_wait(f"configuration {self.proxy.config_path} loaded")
        status, _ = fetch(self.proxy, f"/owa/?marker={self.marker()}", cert=None)
        self.assertEqual(status, 200)

    def test_sessions_survive_a_reload_but_not_a_change_of_identity_policy(self):
        # Tickets outlive a reload (issue 15: the ticket keys are process-wide, or shared by
        # instances, so a rotation by SIGHUP keeps sessions), but an identity decided under
        # another policy (client CAs, upn sources, verify depth, ...) never comes back through
        # one: those are part of the session id context. Revocation is checked per request.
        for version in ("1.2", "1.3"):
            with self.subTest(version=version):
                ctx = pinned("alice", version)
                first = tls_fetch(self.proxy, ctx, "/owa/healthcheck.htm")
                self.assertTrue(resumable(first.session, version))
                self.reload_and_wait(f"configuration {self.proxy.config_path} loaded")
                m = self.marker()
                after = tls_fetch(self.proxy, ctx, f"/owa/?marker={m}", session=first.session)
                self.assertTrue(after.reused, "a reload of the same policy lost the session")
                self.assertEqual(after.status, 200, after)
                self.assertEqual(self.backend_identity(m), "alice@lab.test")
                # Another identity policy: the same ticket no longer resumes.
                self.proxy.write_config([f"http://{self.mock.http}"],
                                        sections={"tls": {"verify_depth": 4}})
                try:
                    self.reload_and_wait(f"configuration {self.proxy.config_path} loaded")
                    m = self.marker()
                    other = tls_fetch(self.proxy, ctx, f"/owa/?marker={m}", session=first.session)
                    self.assertFalse(other.reused, "a ticket from another identity policy was resumed")
                    self.assertEqual(other.status, 200, other)
                    self.assertEqual(self.backend_identity(m), "alice@lab.test")
                finally:
                    self.proxy.write_config([f"http://{self.mock.http}"])
                    self.reload_and_wait(f"configuration {self.proxy.config_path} loaded")

    def test_verified_chains_are_not_reused_after_a_reload_with_other_anchors(self):
        # The chains verified under the old client_ca are remembered by the old TLS context
        # only: after a reload that trusts another root, the same chain is judged again.
        m = self.marker()
        self.assertEqual(fetch(self.proxy, f"/owa/?marker={m}", cert="alice")[0], 200)
        self.assertEqual(self.backend_identity(m), "alice@lab.test")
        m = self.marker()
        self.assertEqual(fetch(self.proxy, f"/owa/?marker={m}", cert="alice")[0], 200)
        rogue = os.path.join(PKI, "ca", "rogue-root.pem")
        self.proxy.write_config([f"http://{self.mock.http}"],
                                sections={"tls": {"client_ca": rogue, "crl": []}})
        self.reload_and_wait(f"configuration {self.proxy.config_path} loaded")
        status, body = fetch(self.proxy, f"/owa/?marker={self.marker()}", cert="alice")
        self.assertEqual(status, 403)
        self.assertIn(b"403.16", body)
        m = self.marker()
        self.assertEqual(fetch(self.proxy, f"/owa/?marker={m}", cert="untrusted")[0], 200)
        self.assertEqual(self.backend_identity(m), "ivan@lab.test")

    def test_sighup_with_a_broken_certificate_keeps_the_old_one(self):
        # The file parses but the key does not load: rejected at build time, not half-applied.
        garbage = os.path.join(self.tmp, "reload-garbage.key")
        with open(garbage, "w") as f:
            f.write("not a key\n")
        os.chmod(garbage, 0o600)  # refused for its content, not for its mode
        self.proxy.write_config([f"http://{self.mock.http}"], sections={"tls": {"private_key": garbage}})
        self.reload_and_wait("keeping the running configuration")
        self.assertIn(garbage, self.proxy.process.output())
        status, _ = fetch(self.proxy, f"/owa/?marker={self.marker()}", cert="alice")
        self.assertEqual(status, 200)

    def test_sighup_with_a_key_readable_by_others_keeps_the_old_one(self):
        key = os.path.join(self.tmp, "reload-open.key")
        shutil.copyfile(os.path.join(PKI, "server.key"), key)
        os.chmod(key, 0o640)
        self.proxy.write_config([f"http://{self.mock.http}"], sections={"tls": {"private_key": key}})
        self.reload_and_wait("keeping the running one")
        self.assertIn(f"{key} is accessible by group or others (mode 0640)",
                      self.proxy.process.output())
        status, _ = fetch(self.proxy, f"/owa/?marker={self.marker()}", cert="alice")
        self.assertEqual(status, 200)


class Drain(TempDirCase):
    HOLD = 3  # seconds the mock holds a Ping

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mock = Mock(cls.tmp, heartbeat_cap=cls.HOLD)
        with open(os.path.join(FIXTURES, "ping_req.wbxml"), "rb") as f:
            cls.ping_body = f.read()
        with open(os.path.join(FIXTURES, "ping_resp_expired.wbxml"), "rb") as f:
            cls.ping_expired = f.read()

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()
        super().tearDownClass()

    def held(self):
        host, port = self.mock.http.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", "/mock/stats")
            return json.loads(conn.getresponse().read())["held"]
        finally:
            conn.close()

    def in_background(self, proxy, method, path, body=None, headers=None):
        result = {}

        def go():
            c = Client(proxy, "alice", timeout=30)
            try:
                result["response"] = c.request(method, path, body, headers)
            except Exception as e:  # noqa: BLE001 - reported by the test
                result["error"] = e
            finally:
                c.close()
        t = threading.Thread(target=go, daemon=True)
        t.start()
        return t, result

    def test_sigterm_lets_a_held_ping_finish_and_refuses_new_connections(self):
        drain = 15
        proxy = Proxy(self.tmp, [f"http://{self.mock.http}"], sections={"timeouts": {"drain": drain}})
        try:
            idle = Client(proxy, "alice")
            self.assertEqual(idle.request("GET", "/owa/healthcheck.htm").status, 200)
            self.assertEqual(admin_get(proxy, "/readyz")[0], 200)
            t, result = self.in_background(
                proxy, "POST", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=drain1"
                "&DeviceType=SmartPhone", self.ping_body, EAS_HEADERS)
            wait_until(lambda: self.held() >= 1, timeout=10, what="the Ping held by the backend")
            t0 = time.monotonic()
            proxy.process.signal(signal.SIGTERM)
            wait_until(lambda: refuses_connections(proxy), timeout=5, what="new connections refused")
            status, text = admin_get(proxy, "/readyz")
            self.assertEqual(status, 503, text)
            self.assertTrue(t.is_alive(), "the Ping ended before the drain was observed")
            # The idle keep-alive connection is closed at once, not after the drain.
            try:
                self.assertEqual(idle.sock.recv(1), b"")
            except (ConnectionResetError, OSError) as e:
                self.assertNotIsInstance(e, TimeoutError, "idle connection kept open while draining")
            idle.close()
            t.join(timeout=drain + 5)
            self.assertFalse(t.is_alive())
            self.assertNotIn("error", result, result.get("error"))
            r = result["response"]
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, self.ping_expired)
            code = proxy.process.proc.wait(timeout=drain + 5)
            self.assertEqual(code, 0)
            self.assertLess(time.monotonic() - t0, drain)
            self.assertIn("drain:", proxy.process.output())
        finally:
            proxy.stop()

    def test_requests_past_the_drain_deadline_are_cut_and_the_process_exits(self):
        drain = 1
        proxy = Proxy(self.tmp, [f"http://{self.mock.http}"], sections={"timeouts": {"drain": drain}})
        try:
            # A Ping the backend holds (HOLD s) longer than the drain allows (1 s).
            t, result = self.in_background(
                proxy, "POST", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=drain2"
                "&DeviceType=SmartPhone", self.ping_body, EAS_HEADERS)
            wait_until(lambda: self.held() >= 1, timeout=10, what="the Ping held by the backend")
            t0 = time.monotonic()
            proxy.process.signal(signal.SIGTERM)
            code = proxy.process.proc.wait(timeout=drain + 10)
            elapsed = time.monotonic() - t0
            self.assertEqual(code, 0)
            self.assertGreaterEqual(elapsed, drain * 0.9)
            self.assertLess(elapsed, drain + 3)
            t.join(timeout=10)
            self.assertFalse(t.is_alive())
            self.assertNotIn("response", result, "the cut request got a response")
        finally:
            proxy.stop()


class Admin(TempDirCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mock = Mock(cls.tmp, heartbeat_cap=1)
        cls.proxy = Proxy(cls.tmp, [f"http://{cls.mock.http}"])

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        cls.mock.stop()
        super().tearDownClass()

    def metrics(self):
        status, text = admin_get(self.proxy, "/metrics")
        self.assertEqual(status, 200)
        return text

    def test_health_and_readiness(self):
        self.assertEqual(admin_get(self.proxy, "/healthz")[0], 200)
        self.assertEqual(admin_get(self.proxy, "/readyz")[0], 200)
        self.assertEqual(admin_get(self.proxy, "/no-such-page")[0], 404)

    def test_metrics_count_requests_handshakes_connections_and_rejections(self):
        before = self.metrics()
        for name in ("cbagate_requests_total", "cbagate_tls_handshakes_total",
                     "cbagate_connections_active"):
            self.assertIsNotNone(metric_value(before, name), name)
        revoked = lambda text: metric_value(text, "cbagate_certificate_rejections_total", 'reason="revoked"') or 0
        status, body = fetch(self.proxy, "/owa/", cert="revoked")
        self.assertEqual(status, 403)
        self.assertIn(b"403.13", body)
        c = Client(self.proxy, "alice")
        try:
            self.assertEqual(c.request("GET", "/owa/").status, 200)
            after = self.metrics()  # while c is still open
            self.assertGreaterEqual(metric_value(after, "cbagate_connections_active"), 1)
        finally:
            c.close()
        self.assertEqual(revoked(after), revoked(before) + 1)
        self.assertGreaterEqual(metric_value(after, "cbagate_requests_total"),
                                metric_value(before, "cbagate_requests_total") + 2)
        self.assertGreaterEqual(metric_value(after, "cbagate_tls_handshakes_total"),
                                metric_value(before, "cbagate_tls_handshakes_total") + 2)
        wait_until(lambda: metric_value(self.metrics(), "cbagate_connections_active") == 0,
                   timeout=10, what="cbagate_connections_active back to 0")

    def test_config_shows_routes_but_nothing_secret(self):
        status, text = admin_get(self.proxy, "/config")
        self.assertEqual(status, 200)
        self.assertIn("/owa", text)
        with open(os.path.join(PKI, "server.key")) as f:
            key = f.read()
        self.assertNotIn("PRIVATE KEY", text)
        self.assertNotIn(key.splitlines()[1], text)
        self.assertNotIn("server.key", text)
        self.assertNotIn(".key", text)


if __name__ == "__main__":
    unittest.main()

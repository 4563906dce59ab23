"""Operating the process (issue 13): metrics that `promtool check metrics` accepts, with the
lifetimes of certificates and CRLs, build info, process metrics and per-route series; SIGHUP and
SIGUSR1 reopen both logs after logrotate renamed them; the soft descriptor limit raised to the
hard one; accept errors (out of descriptors) counted and logged at most once a second; backend
health (a server answering 503 on its health check leaves the rotation and comes back, passive
ejection after 5xx) with /readyz saying why it is not ready."""
import http.server
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import admin_get, BIN, MOCK, PKI, Mock, Proxy, request, wait_until


def read(path):
    with open(path) as f:
        return f.read()


def series(text, name):
    """{labels-string: value} of every series of `name`."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            out[key[len(name):]] = float(value)
    return out


class TempDir(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (BIN and MOCK and PKI):
            raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-ops-")
        cls.mock = Mock(cls.tmp, heartbeat_cap=1)

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)


class Metrics(TempDir):
    def test_metrics_parse_with_promtool_and_carry_the_new_series(self):
        if shutil.which("promtool") is None:
            self.skipTest("promtool (Debian package prometheus, install-deps test) is not installed")
        p = Proxy(self.tmp, [f"http://{self.mock.http}"])
        try:
            self.assertEqual(request(p, "GET", "/owa/?marker=ops1", cert="alice").status, 200)
            self.assertEqual(request(p, "GET", "/owa/", cert=None).status, 403)
            status, text = admin_get(p, "/metrics")
            self.assertEqual(status, 200)
            r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            # promtool exits 1 for lint advice too; a parse error says "error while linting".
            self.assertNotIn("error while linting", r.stdout + r.stderr)
            self.assertNotIn("text format parsing error", r.stdout + r.stderr)
            build = series(text, "cbagate_build_info")
            self.assertEqual(list(build.values()), [1.0])
            self.assertRegex(next(iter(build)), r'version="\d+\.\d+')
            for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds",
                         "process_start_time_seconds"):
                self.assertGreater(series(text, name).get("", 0), 0, name)
            certs = series(text, "cbagate_certificate_expiry_seconds")
            self.assertTrue(any('kind="server"' in k for k in certs), certs)
            self.assertTrue(any('kind="client_ca"' in k for k in certs), certs)
            self.assertTrue(all(v > 1.6e9 for v in certs.values()), certs)
            crls = series(text, "cbagate_crl_next_update_seconds")
            self.assertTrue(any("Issuing CA" in k for k in crls), crls)
            routes = series(text, "cbagate_route_responses_total")
            self.assertEqual(routes.get('{route="/owa",class="2xx"}'), 1.0, routes)
            self.assertEqual(routes.get('{route="/owa",class="4xx"}'), 1.0, routes)
            self.assertIn('{route="/owa",le="+Inf"}', series(text, "cbagate_route_request_duration_seconds_bucket"))
        finally:
            self.assertEqual(p.stop(), 0)


class Logs(TempDir):
    def test_sighup_and_sigusr1_reopen_both_logs_after_a_rename(self):
        log = os.path.join(self.tmp, "process.log")
        p = Proxy(self.tmp, [f"http://{self.mock.http}"], sections={"log": {"path": log}})
        try:
            self.assertEqual(request(p, "GET", "/owa/?marker=before", cert="alice").status, 200)
            wait_until(lambda: os.path.exists(p.access_log) and "before" in read(p.access_log))
            for n, sig in enumerate((signal.SIGUSR1, signal.SIGHUP)):
                with self.subTest(signal=sig.name):
                    os.rename(log, f"{log}.{n}")
                    os.rename(p.access_log, f"{p.access_log}.{n}")
                    p.process.signal(sig)
                    wait_until(lambda: os.path.exists(log) and "logs reopened" in read(log),
                               what="the process log reopened under its name")
                    marker = f"after{n}"
                    self.assertEqual(request(p, "GET", f"/owa/?marker={marker}", cert="alice").status, 200)
                    wait_until(lambda: os.path.exists(p.access_log) and marker in read(p.access_log),
                               what="the access log reopened under its name")
                    self.assertNotIn(marker, read(f"{p.access_log}.{n}"))
        finally:
            self.assertEqual(p.stop(), 0)

    def test_soft_descriptor_limit_is_raised_to_the_hard_one(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard <= 256:
            self.skipTest(f"hard limit {hard}: nothing to raise to")
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # the child inherits 256
        try:
            p = Proxy(self.tmp, [f"http://{self.mock.http}"])
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        try:
            with open(f"/proc/{p.process.pid}/limits") as f:
                line = next(x for x in f if x.startswith("Max open files"))
            self.assertEqual(line.split()[3:5], [str(hard), str(hard)], line)
            self.assertIn(f"descriptor limit {hard} (was 256", p.process.output())
        finally:
            self.assertEqual(p.stop(), 0)


    def test_accept_errors_are_counted_and_logged_at_most_once_a_second(self):
        p = Proxy(self.tmp, [f"http://{self.mock.http}"])
        held = []
        try:
            # Lower the running proxy's soft descriptor limit to what it holds plus a few: the
            # next connections exhaust it and every accept fails with EMFILE.
            limits = resource.prlimit(p.process.pid, resource.RLIMIT_NOFILE)
            fds = len(os.listdir(f"/proc/{p.process.pid}/fd"))
            resource.prlimit(p.process.pid, resource.RLIMIT_NOFILE, (fds + 8, limits[1]))
            started = time.monotonic()
            for _ in range(40):
                held.append(socket.create_connection((p.host, p.port), timeout=5))
            # The second log line carries the count of the errors it held back.
            wait_until(lambda: "more accept errors in the last second" in p.process.output(),
                       timeout=30, what="a rate-limited accept error line")
            elapsed = time.monotonic() - started
            output = p.process.output().splitlines()
            lines = [x for x in output if "[main] accept failed" in x]
            self.assertTrue(any("raise LimitNOFILE" in x for x in lines), lines)
            # Two I/O threads retry every 50 ms: dozens of errors, at most one line a second.
            self.assertLessEqual(len(lines), int(elapsed) + 2, lines)
            # The admin listener's accept fails too (Linux checks for a free descriptor first):
            # at most one line a second as well.
            admin = [x for x in output if "admin: accept failed" in x]
            self.assertLessEqual(len(admin), int(elapsed) + 2, admin)
        finally:
            for s in held:
                s.close()
        try:
            resource.prlimit(p.process.pid, resource.RLIMIT_NOFILE, limits)
            count = wait_until(lambda: (v := series(admin_get(p, "/metrics")[1], "cbagate_accept_errors_total").get(""))
                               and v, what="the accept error counter")
            self.assertGreater(count, len(lines))
        finally:
            self.assertEqual(p.stop(), 0)


class _Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        healthy = self.server.healthy.is_set()
        if self.path.endswith("/healthcheck.htm"):
            code = 200 if healthy else 503
        else:
            code = 200 if healthy or not self.server.fail_requests else 503
            self.server.hits += 1
        body = f"{self.server.name} {code}".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def backend(name, fail_requests=False):
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    s.daemon_threads = True
    s.healthy = threading.Event()
    s.healthy.set()
    s.name = name
    s.hits = 0
    s.fail_requests = fail_requests
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s


class Health(TempDir):
    def proxy(self, servers, **upstream):
        return Proxy(self.tmp, [f"http://127.0.0.1:{s.server_address[1]}" for s in servers],
                     routes=[{"prefix": "/owa", "client_cert": "none"}], sections={"upstream": upstream})

    def test_a_server_failing_its_health_check_leaves_the_rotation_and_comes_back(self):
        a, b = backend("a"), backend("b")
        p = self.proxy([a, b], health_check="/owa/healthcheck.htm", health_interval="200ms",
                       unhealthy_threshold=2, healthy_threshold=2, max_failures=0)
        url_a = f"http://127.0.0.1:{a.server_address[1]}"
        try:
            a.healthy.clear()  # ServerWideOffline: healthcheck.htm answers 503
            wait_until(lambda: f'cbagate_upstream_healthy{{server="{url_a}"}} 0' in admin_get(p, "/metrics")[1],
                       what="server a ejected")
            self.assertIn(f"health: {url_a} taken out of the rotation", p.process.output())
            before = a.hits
            for i in range(6):
                self.assertEqual(request(p, "GET", f"/owa/x{i}", cert=None).status, 200)
            self.assertEqual(a.hits, before, "an ejected server got requests")
            self.assertEqual(admin_get(p, "/readyz")[0], 200)  # b is still there
            a.healthy.set()
            wait_until(lambda: f'cbagate_upstream_healthy{{server="{url_a}"}} 1' in admin_get(p, "/metrics")[1],
                       what="server a back")
            self.assertIn(f"health: {url_a} back in the rotation", p.process.output())
        finally:
            p.stop()
            a.shutdown()
            b.shutdown()

    def test_no_healthy_server_makes_readyz_not_ready_with_the_reason(self):
        a = backend("a")
        p = self.proxy([a], health_check="/owa/healthcheck.htm", health_interval="200ms",
                       unhealthy_threshold=1, healthy_threshold=1)
        try:
            self.assertEqual(admin_get(p, "/readyz")[0], 200)
            a.healthy.clear()
            status, body = wait_until(lambda: (r := admin_get(p, "/readyz"))[0] == 503 and r,
                                      what="/readyz not ready")
            self.assertIn("not ready: no upstream server is healthy", body)
            self.assertIn("HTTP 503", body)
            a.healthy.set()
            wait_until(lambda: admin_get(p, "/readyz")[0] == 200, what="/readyz ready again")
        finally:
            p.stop()
            a.shutdown()

    def test_passive_ejection_after_consecutive_5xx(self):
        a, b = backend("a", fail_requests=True), backend("b")
        p = self.proxy([a, b], max_failures=3, ejection_time="1h")
        url_a = f"http://127.0.0.1:{a.server_address[1]}"
        try:
            a.healthy.clear()  # a answers 503 to requests
            for i in range(12):
                request(p, "GET", f"/owa/p{i}", cert=None)
            self.assertIn(f'cbagate_upstream_healthy{{server="{url_a}"}} 0', admin_get(p, "/metrics")[1])
            before = a.hits
            for i in range(6):
                self.assertEqual(request(p, "GET", f"/owa/q{i}", cert=None).status, 200)
            self.assertEqual(a.hits, before)
        finally:
            p.stop()
            a.shutdown()
            b.shutdown()


if __name__ == "__main__":
    unittest.main()

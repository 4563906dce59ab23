"""Operating the process (issue 13): metrics that `promtool check metrics` accepts, with the
lifetimes of certificates and CRLs, build info, process metrics and per-route series; SIGHUP and
SIGUSR1 reopen both logs after logrotate renamed them; the soft descriptor limit raised to the
hard one; accept errors (out of descriptors) counted and logged at most once a second."""
import http.client
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import socket
import time
import unittest

from harness import BIN, MOCK, PKI, Mock, Proxy, request, wait_until


def admin_get(proxy, path):
    host, port = proxy.admin.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


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


if __name__ == "__main__":
    unittest.main()

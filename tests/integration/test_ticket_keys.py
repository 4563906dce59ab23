"""Session tickets across instances (tls.ticket_keys) and across reloads.

- Two instances sharing one key file: a session from one resumes on the other, with the same
  identity at the backend (the ticket carries the verified identity).
- Two instances with process-local keys: no resumption across them (tickets are not portable
  without the shared file), but a reload keeps the process's own tickets valid.
- Rotation: `cbagate --new-ticket-keys FILE` prepends a key; after SIGHUP the old sessions still
  resume. A file without the old key (replaced; the file watch sees it) ends them.
- A key file readable by group or others, or with a wrong-sized key, stops startup with a
  message naming the file and the cause.
"""
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import unittest

from harness import (BIN, MOCK, PKI, Mock, Proxy, client_context, metric_sample, metrics_text,
                     wait_until)

ROUTES = [{"prefix": "/owa", "client_cert": "require"}]


def new_keys(path):
    out = subprocess.run([BIN, "--new-ticket-keys", path], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def fetch(proxy, ctx, marker, session=None):
    """One request on a new TLS 1.3 connection; (session after it, reused?, status line)."""
    with socket.create_connection((proxy.host, proxy.port), timeout=15) as s:
        with ctx.wrap_socket(s, server_hostname="localhost", session=session) as t:
            reused = t.session_reused
            t.sendall(f"GET /owa/?marker={marker} HTTP/1.1\r\nHost: localhost\r\n"
                      f"Connection: close\r\n\r\n".encode())
            data = b""
            while True:
                b = t.recv(65536)
                if not b:
                    break
                data += b
            return t.session, reused, data.split(b"\r\n", 1)[0]


class TicketKeys(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (BIN and MOCK and PKI):
            raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-tk-")
        cls.mock = Mock(cls.tmp)
        cls.procs = []

    @classmethod
    def tearDownClass(cls):
        for p in cls.procs:
            p.stop()
        cls.mock.stop()
        import shutil
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def proxy(self, ticket_keys=None, watch="2s"):
        tls = {"ticket_keys": ticket_keys} if ticket_keys else {}
        p = Proxy(self.tmp, [f"http://{self.mock.http}"], routes=ROUTES,
                  sections={"tls": tls, "revocation": {"watch_interval": watch}})
        self.procs.append(p)
        return p

    def ctx(self):
        c = client_context("alice", tls_min=ssl.TLSVersion.TLSv1_3)
        return c

    def upn_seen(self, marker):
        recs = wait_until(lambda: [r for r in self.mock.requests() if marker in r.get("target", "")],
                          10, "backend record")
        return recs[0]["identity"]

    def test_shared_key_file_resumes_on_the_other_instance(self):
        keys = os.path.join(self.tmp, "shared.keys")
        new_keys(keys)
        a, b = self.proxy(keys), self.proxy(keys)
        ctx = self.ctx()
        session, reused, status = fetch(a, ctx, "tk-a1")
        self.assertIn(b" 200 ", status)
        self.assertFalse(reused)
        self.assertIsNotNone(session)
        _, reused, status = fetch(b, ctx, "tk-b1", session)
        self.assertTrue(reused, "a ticket of instance A did not resume on instance B")
        self.assertIn(b" 200 ", status)
        self.assertEqual(self.upn_seen("tk-b1"), "alice@lab.test")
        self.assertEqual(metric_sample(metrics_text(b), "cbagate_tls_handshakes_resumed_total"), 1.0)

    def test_process_local_keys_do_not_cross_instances_but_survive_a_reload(self):
        a, b = self.proxy(), self.proxy()
        ctx = self.ctx()
        session, _, _ = fetch(a, ctx, "tk-l1")
        _, reused, status = fetch(b, ctx, "tk-l2", session)
        self.assertFalse(reused)
        self.assertIn(b" 200 ", status)  # a full handshake instead
        before = metric_sample(metrics_text(a), "cbagate_reloads_total", result="ok") or 0
        a.process.signal(signal.SIGHUP)
        wait_until(lambda: (metric_sample(metrics_text(a), "cbagate_reloads_total", result="ok") or 0)
                   > before, 15, "reload")
        _, reused, _ = fetch(a, ctx, "tk-l3", session)
        self.assertTrue(reused, "a reload invalidated the process's own tickets")

    def test_rotation_keeps_old_sessions_then_removal_ends_them(self):
        keys = os.path.join(self.tmp, "rotated.keys")
        new_keys(keys)
        a = self.proxy(keys, watch="200ms")
        ctx = self.ctx()
        old_session, _, _ = fetch(a, ctx, "tk-r1")
        out = new_keys(keys)  # prepends: the old key still decrypts
        self.assertIn("1 earlier key(s) still decrypt", out)
        reloads = lambda: metric_sample(metrics_text(a), "cbagate_reloads_total", result="ok") or 0
        before = reloads()
        a.process.signal(signal.SIGHUP)
        wait_until(lambda: reloads() > before, 15, "reload after SIGHUP")
        session, reused, _ = fetch(a, ctx, "tk-r2", old_session)
        self.assertTrue(reused, "the previous key no longer decrypts after a rotation")
        # A file with only a new key, put in place by rename: the file watch reloads it.
        fresh = os.path.join(self.tmp, "fresh.keys")
        new_keys(fresh)
        before = reloads()
        os.rename(fresh, keys)
        wait_until(lambda: reloads() > before, 15, "reload by the file watch")
        _, reused, status = fetch(a, ctx, "tk-r3", old_session)
        self.assertFalse(reused, "a key removed from the file still decrypts")
        self.assertIn(b" 200 ", status)

    def failed_start(self, keys):
        """Runs cbagate with tls.ticket_keys = keys, expecting it to refuse: (exit code, output)."""
        p = Proxy.__new__(Proxy)
        p.access_log = os.path.join(self.tmp, "refused-access.jsonl")
        p.config_path = os.path.join(self.tmp, "refused-" + os.path.basename(keys) + ".toml")
        p.write_config([f"http://{self.mock.http}"], routes=ROUTES, sections={"tls": {"ticket_keys": keys}})
        out = subprocess.run([BIN, "-c", p.config_path], capture_output=True, text=True, timeout=60)
        return out.returncode, out.stdout + out.stderr

    def test_a_key_file_others_can_read_or_of_the_wrong_size_stops_startup(self):
        keys = os.path.join(self.tmp, "loose.keys")
        new_keys(keys)
        os.chmod(keys, 0o644)
        rc, out = self.failed_start(keys)
        self.assertEqual(rc, 2, out)  # a configuration error: the secret-file rule of [tls]
        self.assertIn(f"tls.ticket_keys: {keys} is accessible by group or others (mode 0644)", out)
        short = os.path.join(self.tmp, "short.keys")
        with open(short, "w") as f:
            f.write("A" * 64 + "\n")
        os.chmod(short, 0o600)
        rc, out = self.failed_start(short)
        self.assertEqual(rc, 1, out)
        self.assertIn(short + ": line 1: 48 bytes, a key is 80", out)

    def test_a_bad_file_on_reload_keeps_the_running_keys(self):
        keys = os.path.join(self.tmp, "reload-bad.keys")
        new_keys(keys)
        a = self.proxy(keys, watch="0s")
        ctx = self.ctx()
        session, _, _ = fetch(a, ctx, "tk-f1")
        os.chmod(keys, 0o640)
        failed = lambda: metric_sample(metrics_text(a), "cbagate_reloads_total", result="failed") or 0
        before = failed()
        a.process.signal(signal.SIGHUP)
        wait_until(lambda: failed() > before, 15, "a refused reload")
        self.assertIn("mode 0640", a.process.output())
        _, reused, _ = fetch(a, ctx, "tk-f2", session)
        self.assertTrue(reused)


if __name__ == "__main__":
    unittest.main()

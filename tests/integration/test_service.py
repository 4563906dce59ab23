"""cbagate under a service manager (config/systemd/cbagate.service, Type=notify).

A fake manager: a datagram socket named by NOTIFY_SOCKET, as systemd passes it. READY=1 comes
once the listeners accept; SIGHUP gives RELOADING=1 then READY=1 again; SIGTERM gives
STOPPING=1. With timeouts.drain_notice, /readyz answers 503 while the listener still accepts,
and only then does the listener close (what lets HAProxy take the instance out first).
"""
import http.client
import os
import signal
import socket
import ssl
import tempfile
import time
import unittest

from harness import BIN, MOCK, PKI, Mock, Process, Proxy, client_context, read_ready, wait_until

ROUTES = [{"prefix": "/public", "client_cert": "none"}]


def readyz(admin):
    host, port = admin.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        c.request("GET", "/readyz")
        return c.getresponse().status
    finally:
        c.close()


def tls_accepts(host, port):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            with client_context().wrap_socket(s, server_hostname="localhost"):
                return True
    except (ConnectionRefusedError, ConnectionResetError, ssl.SSLError, OSError):
        return False


class Notify(unittest.TestCase):
    def setUp(self):
        if not (BIN and MOCK and PKI):
            self.skipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")
        self.tmp = tempfile.mkdtemp(prefix="cbagate-svc-")
        self.mock = Mock(self.tmp)
        self.sock_path = os.path.join(self.tmp, "notify.sock")
        self.manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.manager.bind(self.sock_path)
        self.manager.settimeout(20)
        # The configuration, written by the harness's Proxy without starting it.
        p = Proxy.__new__(Proxy)
        p.access_log = os.path.join(self.tmp, "access.jsonl")
        p.config_path = os.path.join(self.tmp, "cbagate.toml")
        p.write_config([f"http://{self.mock.http}"], routes=ROUTES,
                       sections={"timeouts": {"drain_notice": 3}})
        self.ready_file = os.path.join(self.tmp, "cbagate.ready")
        env = dict(os.environ, NOTIFY_SOCKET=self.sock_path)
        self.proc = Process([BIN, "-c", p.config_path, "--ready-file", self.ready_file],
                            os.path.join(self.tmp, "cbagate.out"), env=env)

    def tearDown(self):
        if hasattr(self, "proc"):
            self.proc.stop()
        if hasattr(self, "mock"):
            self.mock.stop()
        self.manager.close()
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)

    def next_message(self):
        data = self.manager.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)

    def test_ready_reloading_stopping_and_the_drain_notice(self):
        m = self.next_message()
        self.assertEqual(m.get("READY"), "1", m)
        self.assertIn("listening on", m.get("STATUS", ""))
        ready = read_ready(self.ready_file, self.proc.proc, "cbagate")
        host, port = ready["listen"][0].rsplit(":", 1)
        port = int(port)
        self.assertTrue(tls_accepts(host, port))

        self.proc.signal(signal.SIGHUP)
        m = self.next_message()
        self.assertEqual(m.get("RELOADING"), "1", m)
        self.assertIn("MONOTONIC_USEC", m)
        m = self.next_message()
        self.assertEqual(m.get("READY"), "1", m)

        self.assertEqual(readyz(ready["admin"]), 200)
        t0 = time.monotonic()
        self.proc.signal(signal.SIGTERM)
        m = self.next_message()
        self.assertEqual(m.get("STOPPING"), "1", m)
        # During the notice: the balancer sees 503, clients are still served.
        self.assertEqual(readyz(ready["admin"]), 503)
        accepted = tls_accepts(host, port)
        if time.monotonic() - t0 < 2.5:  # still inside the notice (a loaded machine may not be)
            self.assertTrue(accepted, "the listener closed before the drain notice ended")
        # Then the listener closes and the process ends cleanly.
        wait_until(lambda: not tls_accepts(host, port), 15, "the listener to close")
        self.assertGreaterEqual(time.monotonic() - t0, 2.9)
        self.assertEqual(self.proc.proc.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main()

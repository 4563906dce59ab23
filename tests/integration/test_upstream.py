"""The backend side: a dead backend gives 502 with a precise log line; failover to a live server;
https upstreams verified against upstream.ca and the expected name; the keep-alive pool reuses
one connection and replaces it, without a 502, once the backend or the proxy closed it."""
import os
import re
import time
import unittest

from harness import (PKI, Client, ProxyTestCase, dead_port, mock_stats, request, wait_until)


def dead_server_url():
    return f"http://127.0.0.1:{dead_port()}"


class Base(ProxyTestCase):
    def mark(self):
        # A terminator, so that marker x1 is no substring of marker x12 (records are found by
        # substring).
        return super().mark() + "z"


class BackendDown(Base):
    """upstream.servers = one port where nothing listens."""

    @classmethod
    def upstream_servers(cls):
        cls.dead = dead_server_url()
        return [cls.dead]

    def test_dead_backend_is_502_with_a_precise_log_line(self):
        for i in range(3):
            with self.subTest(i=i):
                m = self.mark()
                r = request(self.proxy, "GET", f"/owa/?marker={m}")
                self.assertEqual(r.status, 502, r)
                rec = self.proxy_logged(m)
                self.assertEqual(rec["status"], 502)
                self.assertEqual(rec["error"], "upstream_connect_failed")
                self.assertNotForwarded(m)
        # The proxy's own log names the server and the connect error.
        line = wait_until(lambda: next((l for l in self.proxy.process.output().splitlines()
                                        if self.dead in l and "refused" in l.lower()), None),
                          timeout=5, what="the log line naming the dead server")
        self.assertRegex(line, re.escape(self.dead) + r": connect: Connection refused")
        self.assertEqual(line.count(self.dead), 1, f"the server is tried once per request: {line}")

    def test_proxy_keeps_serving_local_replies(self):
        # Refusals that never need the backend still work.
        r = request(self.proxy, "GET", "/owa/", cert=None)
        self.assertEqual(r.status, 403)


class Failover(Base):
    """upstream.servers = [dead, live]: every request is served by the live one."""

    @classmethod
    def upstream_servers(cls):
        cls.dead = dead_server_url()
        return [cls.dead, cls.mock_url()]

    def test_every_request_reaches_the_live_server(self):
        markers = []
        # New client connections (each may land on either I/O thread, each with its own pool and
        # round-robin position), and a keep-alive one.
        for i in range(8):
            m = self.mark()
            markers.append(m)
            r = request(self.proxy, "GET", f"/owa/?marker={m}")
            self.assertEqual(r.status, 200, (i, r))
        c = Client(self.proxy, "alice")
        try:
            for i in range(4):
                m = self.mark()
                markers.append(m)
                r = c.request("GET", f"/owa/?marker={m}")
                self.assertEqual(r.status, 200, (i, r))
        finally:
            c.close()
        for m in markers:
            self.assertEqual(len(self.backend_saw(m)), 1, m)
            rec = self.proxy_logged(m)
            self.assertEqual(rec["upstream"], self.mock_url(), rec)
            self.assertEqual(rec["status"], 200)
            self.assertEqual(rec["error"], "")


class TlsUpstream(Base):
    """https:// upstream: the mock's TLS listener (backend.pem), verified with upstream-ca.pem."""
    UPSTREAM_TLS = True

    def test_https_upstream_is_verified_and_used(self):
        m = self.mark()
        r = request(self.proxy, "GET", f"/owa/?marker={m}")
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        self.assertIs(seen[0]["tls"], True)
        self.assertEqual(seen[0]["identity"], "alice@lab.test")
        rec = self.proxy_logged(m)
        self.assertTrue(rec["upstream"].startswith("https://127.0.0.1:"), rec)

    def test_https_upstream_connection_is_reused(self):
        c = Client(self.proxy, "alice")
        markers = []
        try:
            for _ in range(4):
                m = self.mark()
                markers.append(m)
                self.assertEqual(c.request("GET", f"/owa/?marker={m}").status, 200)
        finally:
            c.close()
        conns = {self.backend_saw(m)[0]["connection"] for m in markers}
        self.assertEqual(len(conns), 1, conns)


class TlsUpstreamWrongCa(Base):
    """upstream.ca = a root that did not issue the backend's certificate."""
    UPSTREAM_TLS = True
    PROXY_SECTIONS = {"upstream": {"ca": os.path.join(PKI, "ca", "rogue-root.pem")}}

    def test_untrusted_backend_certificate_is_502(self):
        m = self.mark()
        r = request(self.proxy, "GET", f"/owa/?marker={m}")
        self.assertEqual(r.status, 502, r)
        rec = self.proxy_logged(m)
        self.assertEqual(rec["error"], "upstream_connect_failed")
        self.assertNotForwarded(m)
        url = self.mock_url()
        line = wait_until(lambda: next((l for l in self.proxy.process.output().splitlines()
                                        if url in l and "TLS handshake" in l), None),
                          timeout=5, what="the log line of the failed upstream handshake")
        self.assertIn("certificate verify failed", line)
        self.assertIn("unable to get local issuer certificate", line)


class TlsUpstreamWrongName(Base):
    """upstream.server_name = a name the backend's certificate does not carry."""
    UPSTREAM_TLS = True
    PROXY_SECTIONS = {"upstream": {"server_name": "wrong.example"}}

    def test_backend_certificate_for_another_name_is_502(self):
        m = self.mark()
        r = request(self.proxy, "GET", f"/owa/?marker={m}")
        self.assertEqual(r.status, 502, r)
        self.assertEqual(self.proxy_logged(m)["error"], "upstream_connect_failed")
        self.assertNotForwarded(m)
        url = self.mock_url()
        line = wait_until(lambda: next((l for l in self.proxy.process.output().splitlines()
                                        if url in l and "TLS handshake" in l), None),
                          timeout=5, what="the log line of the failed upstream handshake")
        self.assertIn("certificate verify failed", line)
        self.assertIn("hostname mismatch", line.lower())
        self.assertEqual(line.count(url), 1, f"the server is tried once per request: {line}")


class TlsUpstreamRightName(Base):
    """The counterpart: upstream.server_name = a name the certificate carries (SNI + check)."""
    UPSTREAM_TLS = True
    PROXY_SECTIONS = {"upstream": {"server_name": "exchange.lab.test"}}

    def test_backend_certificate_for_the_configured_name_is_accepted(self):
        m = self.mark()
        r = request(self.proxy, "GET", f"/owa/?marker={m}")
        self.assertEqual(r.status, 200, r)
        self.assertIs(self.backend_saw(m)[0]["tls"], True)


def sequential(test, client, n):
    """n requests on one client connection; returns the backend connection id of each."""
    out = []
    for _ in range(n):
        m = test.mark()
        r = client.request("GET", f"/owa/?marker={m}")
        test.assertEqual(r.status, 200, r)
        out.append(test.backend_saw(m)[0]["connection"])
    return out


class PoolBackendClosesIdle(Base):
    """The mock closes keep-alive connections idle for 1 s (its --idle-timeout)."""
    MOCK_ARGS = ("--idle-timeout", "1")

    def test_pooled_connection_closed_by_the_backend_is_replaced(self):
        c = Client(self.proxy, "alice", timeout=15)
        try:
            first = sequential(self, c, 3)
            self.assertEqual(len(set(first)), 1, f"sequential requests used {first}")
            # Wait (bounded) until the mock has closed the idle connection: only the stats
            # connection of this very poll stays open.
            wait_until(lambda: mock_stats(self.mock)["open_connections"] <= 1, timeout=10,
                       what="the backend to close its idle connection")
            later = sequential(self, c, 3)
        finally:
            c.close()
        self.assertNotIn(later[0], first, "a connection the backend closed was used again")
        self.assertEqual(len(set(later)), 1, later)


class PoolProxyIdleTimeout(Base):
    """upstream.idle_timeout = 1 s; the mock keeps connections for its default 120 s."""
    PROXY_SECTIONS = {"upstream": {"idle_timeout": 1}}

    def test_pooled_connection_idle_past_the_timeout_is_not_reused(self):
        c = Client(self.proxy, "alice", timeout=15)
        try:
            first = sequential(self, c, 3)
            self.assertEqual(len(set(first)), 1, f"sequential requests used {first}")
            # upstream.idle_timeout is the behaviour under test: let it pass (bounded wait).
            t0 = time.monotonic()
            wait_until(lambda: time.monotonic() - t0 > 1.3, timeout=5, what="1.3 s of idleness")
            later = sequential(self, c, 2)
        finally:
            c.close()
        self.assertNotIn(later[0], first, "a connection idle past upstream.idle_timeout was reused")
        self.assertEqual(later[0], later[1])


if __name__ == "__main__":
    unittest.main()

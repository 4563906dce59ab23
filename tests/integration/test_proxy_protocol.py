"""PROXY protocol (server.proxy_protocol) and the per-address limits, on the real binary.

Behind a balancer the client address is the PROXY header's: it is the one in the access log, in
X-Forwarded-For and the one the per-address limits count. A connection without a valid header,
or from an address outside server.proxy_protocol_from, is closed before TLS and counted; other
connections are not disturbed. Refusals by the limits happen before the handshake and are
logged once per address per minute.
"""
import os
import socket
import ssl
import struct
import time
import unittest

from harness import (Mock, Proxy, ProxyTestCase, client_context, metric_sample, metrics_text,
                     wait_until)

ROUTES = [{"prefix": "/owa", "client_cert": "require"}, {"prefix": "/public", "client_cert": "none"}]


def v1(src, sport, dst="127.0.0.1", dport=443):
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src, sport, dst="127.0.0.1", dport=443, local=False, tlv=b""):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if local:
        return sig + b"\x20\x00\x00\x00"
    if ":" in src:
        block = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        fam = 0x21
    else:
        block = socket.inet_aton(src) + socket.inet_aton(dst)
        fam = 0x11
    block += struct.pack("!HH", sport, dport) + tlv
    return sig + bytes([0x21, fam]) + struct.pack("!H", len(block)) + block


def closed(s):
    """True when the proxy closed `s` (EOF, or a reset: it closes with the peeked bytes unread)."""
    try:
        return s.recv(10) == b""
    except ConnectionResetError:
        return True


def hdr(record, name):
    return [v for k, vs in record["headers"].items() if k.lower() == name.lower() for v in vs]


class EdgeCase(ProxyTestCase):
    ROUTES = ROUTES

    def connect(self, header, cert="alice", timeout=10):
        """TCP to the proxy, `header` first, then TLS: the TLS socket."""
        s = socket.create_connection((self.proxy.host, self.proxy.port), timeout=timeout)
        try:
            if header:
                s.sendall(header)
            return client_context(cert).wrap_socket(s, server_hostname="localhost")
        except BaseException:
            s.close()
            raise

    def get(self, header, marker, cert="alice"):
        with self.connect(header, cert) as t:
            t.sendall(f"GET /owa/?marker={marker} HTTP/1.1\r\nHost: localhost\r\n"
                      f"X-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                b = t.recv(65536)
                if not b:
                    break
                data += b
        return data

    def refused_before_tls(self, header, timeout=10):
        """Sends `header`, then tries a TLS handshake: True when the proxy closes instead."""
        try:
            with self.connect(header, timeout=timeout) as t:
                t.sendall(b"GET /public/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
                return t.recv(100) == b""
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            return True

    def sample(self, name, **labels):
        return metric_sample(metrics_text(self.proxy), name, **labels) or 0.0

    def wait_sample(self, name, value, **labels):
        return wait_until(lambda: self.sample(name, **labels) >= value, 10, f"{name}{labels} >= {value}")


class ProxyProtocol(EdgeCase):
    PROXY_SECTIONS = {
        "server": {"listen": ["127.0.0.1:0"], "threads": 2, "admin_listen": "127.0.0.1:0",
                   "proxy_protocol_from": ["127.0.0.0/8"], "proxy_protocol": True,
                   "max_connections_per_address": 2, "max_handshakes_per_address": 5},
        "timeouts": {"proxy_header": 1},
    }

    def check_client(self, header, ip, port):
        m = self.mark()
        data = self.get(header, m)
        self.assertIn(b" 200 ", data.split(b"\r\n", 1)[0])
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        # The balancer's client, never the balancer, never what the client claims.
        self.assertEqual(hdr(seen[0], "X-Forwarded-For"), [ip])
        self.assertEqual(hdr(seen[0], "X-Client-UPN"), ["alice@lab.test"])
        rec = wait_until(lambda: [r for r in self.proxy.access_records()
                                  if m in (r.get("query") or "")], 10, "access record")
        self.assertEqual(rec[0]["client"], f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")

    def test_v2_header_names_the_client(self):
        before = self.sample("cbagate_proxy_protocol_headers_total", kind="v2")
        self.check_client(v2("203.0.113.7", 51000), "203.0.113.7", 51000)
        self.assertEqual(self.sample("cbagate_proxy_protocol_headers_total", kind="v2"), before + 1)

    def test_v2_ipv6_with_tlvs(self):
        self.check_client(v2("2001:db8::42", 4242, dst="2001:db8::1", tlv=b"\x04\x00\x02hi"),
                          "2001:db8::42", 4242)

    def test_v1_header_names_the_client(self):
        self.check_client(v1("198.51.100.9", 40001), "198.51.100.9", 40001)

    def test_local_header_keeps_the_socket_peer(self):
        before = self.sample("cbagate_proxy_protocol_headers_total", kind="local")
        m = self.mark()
        data = self.get(v2("", 0, local=True), m)
        self.assertIn(b" 200 ", data.split(b"\r\n", 1)[0])
        self.assertEqual(hdr(self.backend_saw(m)[0], "X-Forwarded-For"), ["127.0.0.1"])
        self.assertEqual(self.sample("cbagate_proxy_protocol_headers_total", kind="local"), before + 1)

    def test_no_header_is_closed_before_tls_and_counted(self):
        before = self.sample("cbagate_proxy_protocol_refused_total", reason="malformed")
        self.assertTrue(self.refused_before_tls(b""))  # the ClientHello is no PROXY header
        self.wait_sample("cbagate_proxy_protocol_refused_total", before + 1, reason="malformed")

    def test_malformed_and_oversized_headers_are_closed(self):
        before = self.sample("cbagate_proxy_protocol_refused_total", reason="malformed")
        bad = [b"PROXY TCP4 010.0.0.1 10.0.0.2 1 2\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
               b"PROXY UNKNOWN " + b"a" * 120, b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",
               b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c"]
        for h in bad:
            with self.subTest(h=h):
                self.assertTrue(self.refused_before_tls(h))
        self.wait_sample("cbagate_proxy_protocol_refused_total", before + len(bad), reason="malformed")
        self.assertIn("header after", self.proxy.process.output())

    def test_truncated_and_silent_headers(self):
        before_t = self.sample("cbagate_proxy_protocol_refused_total", reason="truncated")
        s = socket.create_connection((self.proxy.host, self.proxy.port), timeout=10)
        s.sendall(b"PROXY TCP4 1.2.3.4")
        s.shutdown(socket.SHUT_WR)
        self.assertTrue(closed(s))
        s.close()
        self.wait_sample("cbagate_proxy_protocol_refused_total", before_t + 1, reason="truncated")
        # Silent: closed by timeouts.proxy_header (1 s), while another connection is served.
        before = self.sample("cbagate_proxy_protocol_refused_total", reason="timeout")
        s = socket.create_connection((self.proxy.host, self.proxy.port), timeout=10)
        t0 = time.monotonic()
        s.sendall(b"PROXY ")
        self.check_client(v2("192.0.2.55", 1), "192.0.2.55", 1)  # not disturbed meanwhile
        self.assertTrue(closed(s))
        waited = time.monotonic() - t0
        s.close()
        self.assertGreater(waited, 0.8)
        self.assertLess(waited, 8)
        self.wait_sample("cbagate_proxy_protocol_refused_total", before + 1, reason="timeout")

    def test_connections_per_address_refused_before_the_handshake(self):
        before = self.sample("cbagate_address_limit_refused_total", limit="connections")
        held = [self.connect(v2("198.51.100.1", 1000 + i)) for i in range(2)]
        try:
            for i in range(3):
                self.assertTrue(self.refused_before_tls(v2("198.51.100.1", 2000 + i)))
            m = self.mark()
            self.assertIn(b" 200 ", self.get(v2("198.51.100.2", 1), m))  # another address
            self.wait_sample("cbagate_address_limit_refused_total", before + 3, limit="connections")
            # Logged once for the address, not once per refusal.
            lines = [line for line in self.proxy.process.output().splitlines()
                     if "198.51.100.1" in line and "max_connections_per_address" in line]
            self.assertEqual(len(lines), 1, lines)
        finally:
            for t in held:
                t.close()
        # Given back when they close.
        wait_until(lambda: not self.refused_before_tls(v2("198.51.100.1", 3000)), 10,
                   "a connection admitted again")

    def test_handshakes_per_address_per_second(self):
        before = self.sample("cbagate_address_limit_refused_total", limit="handshakes")
        refused = 0
        t0 = time.monotonic()
        for i in range(8):
            with socket.create_connection((self.proxy.host, self.proxy.port), timeout=10) as s:
                s.sendall(v2("198.51.100.3", 100 + i))
                try:
                    with client_context("alice").wrap_socket(s, server_hostname="localhost") as t:
                        t.sendall(b"GET /public/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        if t.recv(100) == b"":
                            refused += 1
                except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                    refused += 1
        if time.monotonic() - t0 < 0.5:  # on a loaded machine the bucket may refill meanwhile
            self.assertGreaterEqual(refused, 2)
        self.assertGreaterEqual(refused, 1)
        self.wait_sample("cbagate_address_limit_refused_total", before + refused, limit="handshakes")


class UntrustedBalancer(EdgeCase):
    """proxy_protocol_from does not cover loopback: every connection is refused unread."""
    PROXY_SECTIONS = {
        "server": {"listen": ["127.0.0.1:0"], "threads": 1, "admin_listen": "127.0.0.1:0",
                   "proxy_protocol_from": ["10.0.0.0/8", "2001:db8::/32"], "proxy_protocol": True},
    }

    def test_a_peer_outside_proxy_protocol_from_is_refused_even_with_a_valid_header(self):
        before = self.sample("cbagate_proxy_protocol_refused_total", reason="untrusted_source")
        for i in range(3):
            self.assertTrue(self.refused_before_tls(v2("203.0.113.1", 100 + i)))
        self.wait_sample("cbagate_proxy_protocol_refused_total", before + 3, reason="untrusted_source")
        self.assertEqual(self.mock.requests(), [])
        lines = [line for line in self.proxy.process.output().splitlines()
                 if "not in server.proxy_protocol_from" in line]
        self.assertEqual(len(lines), 1, lines)  # once per address per minute
        self.assertIn("127.0.0.1", lines[0])


class WithoutProxyProtocol(EdgeCase):
    """Off (the default): a PROXY header is just bytes before a ClientHello, never a client
    address: the handshake fails."""

    def test_a_header_is_not_honoured_when_the_option_is_off(self):
        self.assertTrue(self.refused_before_tls(v2("203.0.113.9", 1)))
        m = self.mark()
        self.get(b"", m)
        self.assertEqual(hdr(self.backend_saw(m)[0], "X-Forwarded-For"), ["127.0.0.1"])


class StartupRefusals(unittest.TestCase):
    def test_proxy_protocol_without_balancers_does_not_start(self):
        import subprocess
        import tempfile
        from harness import BIN, PKI
        if not (BIN and PKI):
            self.skipTest("CBAGATE_BIN and CBAGATE_TEST_PKI must be set")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.toml")
            with open(path, "w") as f:
                f.write(f"""[server]
listen = ["127.0.0.1:0"]
proxy_protocol = true
[tls]
certificate = "{PKI}/server-chain.pem"
private_key = "{PKI}/server.key"
client_ca = "{PKI}/client-roots.pem"
[upstream]
servers = ["http://127.0.0.1:1"]
[[route]]
prefix = "/owa"
""")
            out = subprocess.run([BIN, "-c", path], capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 2)
            self.assertIn("server.proxy_protocol: true needs server.proxy_protocol_from",
                          out.stdout + out.stderr)


if __name__ == "__main__":
    unittest.main()

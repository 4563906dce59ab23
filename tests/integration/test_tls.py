"""The TLS front door: protocol versions, client certificates on TLS 1.2 and 1.3, session
resumption that keeps (and never invents) the identity, tls.client_cert = "require", the server
chain, SNI, ALPN, no client-initiated renegotiation, and the handshake timeout."""
import os
import socket
import ssl
import subprocess
import time
import unittest

from harness import PKI, Proxy, ProxyTestCase, client_context, resumable, status_of

PUBLIC = "/owa/healthcheck.htm"  # a route with client_cert = "none"
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def pinned(cert, version):
    """A client context presenting `cert` (or none) that speaks exactly TLS `version`."""
    v = VERSIONS[version]
    return client_context(cert, tls_max=v, tls_min=v)


class Fetched:
    def __init__(self, raw, session, reused, version, alpn, peer_der):
        self.raw, self.session, self.reused = raw, session, reused
        self.version, self.alpn, self.peer_der = version, alpn, peer_der
        self.status = status_of(raw)
        self.body = raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""

    def __repr__(self):
        return f"<Fetched {self.status} reused={self.reused} {self.version} {self.raw[:160]!r}>"


def fetch(proxy, ctx, path, session=None, server_name="localhost", timeout=10):
    """One raw GET on a fresh TLS connection (http.client cannot offer a session to resume).
    Sends Connection: close and reads until the proxy closes, so a TLS 1.3 ticket (sent after
    the handshake) has arrived by the time the session is taken."""
    with socket.create_connection((proxy.host, proxy.port), timeout=timeout) as s:
        with ctx.wrap_socket(s, server_hostname=server_name, session=session) as t:
            t.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
                      .encode())
            chunks = []
            while True:
                try:
                    b = t.recv(65536)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not b:
                    break
                chunks.append(b)
            return Fetched(b"".join(chunks), t.session, t.session_reused, t.version(),
                           t.selected_alpn_protocol(), t.getpeercert(binary_form=True))


def attempt(proxy, ctx, path="/owa/", server_name="localhost", timeout=10):
    """Tries a handshake and one request. Returns ("handshake", error) when the handshake itself
    fails, ("request", error) when the connection dies before any response (TLS 1.3: the client
    finishes its side of the handshake before the server has judged its certificate, so the
    server's alert arrives on the first read), or ("response", raw bytes)."""
    with socket.create_connection((proxy.host, proxy.port), timeout=timeout) as s:
        try:
            t = ctx.wrap_socket(s, server_hostname=server_name)
        except (ssl.SSLError, ConnectionError) as e:
            return "handshake", e
        with t:
            try:
                t.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                          .encode())
                data = b""
                while True:
                    b = t.recv(65536)
                    if not b:
                        break
                    data += b
            except (ssl.SSLError, ConnectionError) as e:
                return "request", e
            return ("response", data) if data else ("request", EOFError("closed without a response"))


def openssl(*args, timeout=30):
    return subprocess.run(["openssl", *args], capture_output=True, timeout=timeout, check=True)


class TlsTestCase(ProxyTestCase):
    def assertNeverReached(self, marker):
        # For connections that died in or right after the handshake: no access-log line exists
        # to wait for, and the request was never readable by the proxy, so look once.
        found = [r for r in self.mock.requests() if marker in (r.get("target") or "")]
        self.assertEqual(found, [], f"request {marker} reached the backend")


class Versions(TlsTestCase):
    def test_tls_1_0_and_1_1_are_refused(self):
        for name, version in (("1.0", ssl.TLSVersion.TLSv1), ("1.1", ssl.TLSVersion.TLSv1_1)):
            with self.subTest(version=name):
                ctx = client_context("alice", tls_max=version, tls_min=version)
                # Let the client really offer the old version (Debian's default security level
                # would refuse it locally, which would prove nothing about the proxy).
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                m = self.mark()
                kind, err = attempt(self.proxy, ctx, f"/owa/?marker={m}")
                self.assertEqual(kind, "handshake", err)
                self.assertIsInstance(err, (ssl.SSLError, ConnectionError))
                # The proxy's protocol_version alert, not a refusal inside the client.
                self.assertIn("PROTOCOL_VERSION", str(err))
                self.assertNeverReached(m)

    def test_tls_1_2_and_1_3_forward_the_certificate_identity(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                m = self.mark()
                r = fetch(self.proxy, pinned("alice", version), f"/owa/?marker={m}")
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.version, "TLSv" + version)
                seen = self.backend_saw(m)
                self.assertEqual(len(seen), 1)
                self.assertEqual(seen[0]["identity"], "alice@lab.test")
                self.assertEqual(self.proxy_logged(m)["tls_version"], "TLSv" + version)


class Resumption(ProxyTestCase):
    """The default: sessions kept in the proxy's memory (tls.session_cache)."""

    def test_resumed_session_keeps_the_identity(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                ctx = pinned("alice", version)
                m1 = self.mark()
                first = fetch(self.proxy, ctx, f"/owa/?marker={m1}")
                self.assertEqual(first.status, 200, first)
                self.assertFalse(first.reused)
                self.assertTrue(resumable(first.session, version), "no resumable session issued")
                m2 = self.mark()
                again = fetch(self.proxy, ctx, f"/owa/?marker={m2}", session=first.session)
                self.assertTrue(again.reused, "session not resumed")
                self.assertEqual(again.status, 200, again)
                seen = self.backend_saw(m2)
                self.assertEqual(len(seen), 1)
                self.assertEqual(seen[0]["identity"], "alice@lab.test")
                rec = self.proxy_logged(m2)
                self.assertTrue(rec["tls_resumed"])
                self.assertEqual(rec["upn"], "alice@lab.test")

    def test_resumed_session_without_certificate_stays_anonymous(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                ctx = pinned(None, version)
                first = fetch(self.proxy, ctx, PUBLIC)
                self.assertEqual(first.status, 200, first)
                m = self.mark()
                again = fetch(self.proxy, ctx, f"/owa/?marker={m}", session=first.session)
                self.assertTrue(again.reused, "session not resumed")
                self.assertEqual(again.status, 403, again)
                self.assertIn(b"403.7", again.body)
                self.assertNotForwarded(m)

    def test_resumed_session_of_a_revoked_certificate_stays_revoked(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                ctx = pinned("revoked", version)
                first = fetch(self.proxy, ctx, PUBLIC)
                self.assertEqual(first.status, 200, first)
                m = self.mark()
                again = fetch(self.proxy, ctx, f"/owa/?marker={m}", session=first.session)
                self.assertTrue(again.reused, "session not resumed")
                self.assertEqual(again.status, 403, again)
                self.assertIn(b"403.13", again.body)
                self.assertNotForwarded(m)

    def test_ticket_of_another_instance_falls_back_to_a_full_handshake(self):
        other = Proxy(self.tmp, [f"http://{self.mock.http}"])
        try:
            for version in VERSIONS:
                with self.subTest(version=version):
                    ctx = pinned("alice", version)
                    first = fetch(self.proxy, ctx, PUBLIC)
                    self.assertTrue(resumable(first.session, version))
                    m = self.mark()
                    again = fetch(other, ctx, f"/owa/?marker={m}", session=first.session)
                    self.assertFalse(again.reused, "another instance's session was resumed")
                    self.assertEqual(again.status, 200, again)
                    self.assertEqual(self.backend_saw(m)[0]["identity"], "alice@lab.test")
        finally:
            other.stop()


class SelfContainedTickets(Resumption):
    """tls.session_cache = 0: the same guarantees with tickets that carry the session."""
    PROXY_SECTIONS = {"tls": {"session_cache": 0}}

    def test_tickets_carry_the_session(self):
        # Every device resumes however many came since: nothing is kept in the proxy.
        for version in VERSIONS:
            with self.subTest(version=version):
                ctx = {u: pinned(u, version) for u in ("alice", "bob", "carol")}
                firsts = [fetch(self.proxy, ctx[u], PUBLIC) for u in ctx]
                for f in firsts:
                    self.assertTrue(f.session is not None and f.session.has_ticket, f)
                for u, f in zip(ctx, firsts):
                    again = fetch(self.proxy, ctx[u], PUBLIC, session=f.session)
                    self.assertTrue(again.reused, u)


class SessionCache(ProxyTestCase):
    """tls.session_cache bounds the sessions the proxy keeps; the least recently used goes."""
    PROXY_SECTIONS = {"tls": {"session_cache": 2}}

    def test_the_least_recently_used_session_makes_room(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                ctx = {u: pinned(u, version) for u in ("alice", "bob", "carol")}
                a = fetch(self.proxy, ctx["alice"], PUBLIC)
                b = fetch(self.proxy, ctx["bob"], PUBLIC)
                # alice resumes: hers is now the most recently used, bob's the least
                a2 = fetch(self.proxy, ctx["alice"], PUBLIC, session=a.session)
                self.assertTrue(a2.reused)
                c = fetch(self.proxy, ctx["carol"], PUBLIC)  # makes room: bob's goes
                self.assertFalse(c.reused)
                m = self.mark()
                a3 = fetch(self.proxy, ctx["alice"], f"/owa/?marker={m}", session=a.session)
                self.assertTrue(a3.reused, "a kept session was not resumed")
                self.assertEqual(self.backend_saw(m)[0]["identity"], "alice@lab.test")
                m = self.mark()
                b2 = fetch(self.proxy, ctx["bob"], f"/owa/?marker={m}", session=b.session)
                self.assertFalse(b2.reused, "an evicted session was resumed")
                self.assertEqual(b2.status, 200, b2)
                self.assertEqual(self.backend_saw(m)[0]["identity"], "bob@lab.test")


class NoTickets(ProxyTestCase):
    PROXY_SECTIONS = {"tls": {"session_tickets": False}}

    def test_offered_session_is_not_resumed_and_the_request_works(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                ctx = pinned("alice", version)
                first = fetch(self.proxy, ctx, PUBLIC)
                self.assertEqual(first.status, 200, first)
                self.assertFalse(first.session is not None and first.session.has_ticket,
                                 "a ticket was issued with tls.session_tickets = false")
                m = self.mark()
                again = fetch(self.proxy, ctx, f"/owa/?marker={m}", session=first.session)
                self.assertFalse(again.reused)
                self.assertEqual(again.status, 200, again)
                self.assertEqual(self.backend_saw(m)[0]["identity"], "alice@lab.test")


class RequireCertificate(TlsTestCase):
    PROXY_SECTIONS = {"tls": {"client_cert": "require"}}

    def assertRefused(self, cert, version, alert=None):
        m = self.mark()
        kind, err = attempt(self.proxy, pinned(cert, version), f"{PUBLIC}?marker={m}")
        self.assertIn(kind, ("handshake", "request"), err)
        if version == "1.2":
            # TLS 1.2: the client's certificate is judged before its Finished is answered.
            self.assertEqual(kind, "handshake", err)
        if alert:
            self.assertIn(alert, str(err))
        self.assertNeverReached(m)

    def test_handshake_without_certificate_fails(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                self.assertRefused(None, version)

    def test_untrusted_and_revoked_certificates_fail_the_handshake(self):
        for cert, alert in (("untrusted", "UNKNOWN_CA"), ("self-signed", "UNKNOWN_CA"), ("revoked", "REVOKED"),
                            ("expired", "EXPIRED")):
            for version in VERSIONS:
                with self.subTest(cert=cert, version=version):
                    self.assertRefused(cert, version, alert)

    def test_valid_certificate_works(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                m = self.mark()
                r = fetch(self.proxy, pinned("alice", version), f"/owa/?marker={m}")
                self.assertEqual(r.status, 200, r)
                self.assertEqual(self.backend_saw(m)[0]["identity"], "alice@lab.test")

    def test_reconnecting_clients_keep_their_identities(self):
        # Verified chains are remembered per presented chain: every full handshake of the same
        # device gets its own identity back, never another device's.
        for version in VERSIONS:
            for _ in range(3):
                for cert, upn in (("alice", "alice@lab.test"), ("bob", "bob@lab.test")):
                    with self.subTest(version=version, cert=cert):
                        m = self.mark()
                        r = fetch(self.proxy, pinned(cert, version), f"/owa/?marker={m}")
                        self.assertEqual(r.status, 200, r)
                        self.assertFalse(r.reused)
                        self.assertEqual(self.backend_saw(m)[0]["identity"], upn)

    def test_refused_certificates_stay_refused_on_reconnect(self):
        # A good chain verified in between must not make a refused one pass on its next try.
        for version in VERSIONS:
            for _ in range(2):
                for cert, alert in (("untrusted", "UNKNOWN_CA"), ("revoked", "REVOKED"),
                                    ("expired", "EXPIRED")):
                    with self.subTest(cert=cert, version=version):
                        self.assertRefused(cert, version, alert)
                m = self.mark()
                self.assertEqual(fetch(self.proxy, pinned("alice", version), f"/owa/?marker={m}").status, 200)


class ServerCertificate(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # A second certificate for SNI: self-signed, for other.lab.test (made here, never in the repo).
        cls.other_cert = os.path.join(cls.tmp, "other.pem")
        cls.other_key = os.path.join(cls.tmp, "other.key")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", cls.other_key, "-out", cls.other_cert, "-days", "2",
                "-subj", "/CN=other.lab.test", "-addext", "subjectAltName=DNS:other.lab.test")
        sni = ("[[tls.sni]]\n"
               f"server_names = [\"other.lab.test\"]\n"
               f"certificate = \"{cls.other_cert}\"\n"
               f"private_key = \"{cls.other_key}\"\n")
        cls.sni_proxy = Proxy(cls.tmp, [f"http://{cls.mock.http}"], extra_toml=sni)

    @classmethod
    def tearDownClass(cls):
        if hasattr(cls, "sni_proxy"):
            cls.sni_proxy.stop()
        super().tearDownClass()

    @staticmethod
    def der(pem_path):
        with open(pem_path) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    @staticmethod
    def unverified(cert=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(os.path.join(PKI, "clients", f"{cert}-chain.pem"),
                                os.path.join(PKI, "clients", f"{cert}.key"))
        return ctx

    def test_chain_verifies_against_the_root_for_both_names(self):
        for name in ("localhost", "mail.lab.test"):
            for version in VERSIONS:
                with self.subTest(name=name, version=version):
                    # client_context verifies the chain (root only: the proxy must send the
                    # intermediate) and the host name.
                    r = fetch(self.proxy, pinned(None, version), PUBLIC, server_name=name)
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.peer_der, self.der(os.path.join(PKI, "server.pem")))
        with self.assertRaises(ssl.SSLCertVerificationError):
            fetch(self.proxy, client_context(None), PUBLIC, server_name="other.lab.test")

    def test_sni_selects_the_configured_certificate(self):
        r = fetch(self.sni_proxy, self.unverified(), PUBLIC, server_name="other.lab.test")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.peer_der, self.der(self.other_cert))
        for name in ("unknown.lab.test", "mail.lab.test"):
            with self.subTest(name=name):
                r = fetch(self.sni_proxy, self.unverified(), PUBLIC, server_name=name)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.peer_der, self.der(os.path.join(PKI, "server.pem")))

    def test_client_certificate_still_checked_behind_an_sni_certificate(self):
        for cert, status, upn in (("alice", 200, "alice@lab.test"), ("revoked", 403, None), (None, 403, None)):
            with self.subTest(cert=cert):
                m = self.mark()
                r = fetch(self.sni_proxy, self.unverified(cert), f"/owa/?marker={m}",
                          server_name="other.lab.test")
                self.assertEqual(r.peer_der, self.der(self.other_cert))
                self.assertEqual(r.status, status, r)
                if upn:
                    self.assertEqual(self.backend_saw(m)[0]["identity"], upn)

    def test_alpn_selects_http_1_1(self):
        ctx = client_context("alice")
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        r = fetch(self.proxy, ctx, PUBLIC)
        self.assertEqual(r.alpn, "http/1.1")
        self.assertEqual(r.status, 200, r)
        # A client that offers only h2 gets no ALPN answer (not h2) and still speaks HTTP/1.1.
        ctx = client_context("alice")
        ctx.set_alpn_protocols(["h2"])
        r = fetch(self.proxy, ctx, PUBLIC)
        self.assertIsNone(r.alpn)
        self.assertEqual(r.status, 200, r)

    def test_client_initiated_renegotiation_is_refused(self):
        # s_client's "R" command renegotiates (TLS 1.2 only; TLS 1.3 has none). stdin closes
        # right after it, so s_client ends either way; timeout bounds it.
        r = subprocess.run(["openssl", "s_client", "-connect", f"{self.proxy.host}:{self.proxy.port}",
                            "-tls1_2", "-servername", "localhost",
                            "-CAfile", os.path.join(PKI, "ca", "root.pem"),
                            "-cert", os.path.join(PKI, "clients", "alice-chain.pem"),
                            "-key", os.path.join(PKI, "clients", "alice.key")],
                           input=b"R\n", capture_output=True, timeout=30)
        err = r.stderr.decode(errors="replace")
        self.assertIn("RENEGOTIATING", err)
        self.assertIn("no renegotiation", err)
        self.assertNotEqual(r.returncode, 0, err)


class HandshakeTimeout(ProxyTestCase):
    PROXY_SECTIONS = {"timeouts": {"handshake": 1}}

    def closed_after(self, send=b""):
        """Seconds until the proxy closes a TCP connection that sent `send` and then nothing."""
        with socket.create_connection((self.proxy.host, self.proxy.port), timeout=8) as s:
            t0 = time.monotonic()
            if send:
                s.sendall(send)
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            except socket.timeout:
                self.fail("the proxy kept a silent connection open for 8 s")
            elapsed = time.monotonic() - t0
            self.assertEqual(data, b"")
            return elapsed

    def test_silent_connection_is_closed_within_the_handshake_timeout(self):
        elapsed = self.closed_after()
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 3.0)

    def test_partial_client_hello_is_closed_within_the_handshake_timeout(self):
        # A TLS record header announcing a 512-byte handshake message, then silence.
        elapsed = self.closed_after(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 3.0)

    def test_completed_handshake_is_not_cut_by_the_handshake_timeout(self):
        # The deadline covers the handshake only: a request sent 1.5 s after it still works.
        ctx = client_context("alice")
        with socket.create_connection((self.proxy.host, self.proxy.port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                t.settimeout(1.5)
                with self.assertRaises(socket.timeout, msg="closed after the handshake"):
                    t.recv(1)
                t.settimeout(10)
                t.sendall(b"GET /owa/healthcheck.htm HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    b = t.recv(65536)
                    if not b:
                        break
                    data += b
        self.assertEqual(status_of(data), 200, data[:200])


if __name__ == "__main__":
    unittest.main()

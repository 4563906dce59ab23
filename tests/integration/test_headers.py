"""Header hygiene and identity: nothing a client sends can set the identity the backend sees,
credentials never bypass the certificate, hop-by-hop fields stop at the proxy (both ways),
forwarding headers are the proxy's, and Authorization values never reach a log."""
import http.server
import os
import socketserver
import tempfile
import threading
import shutil
import unittest

from harness import BIN, MOCK, PKI, Proxy, ProxyTestCase, RawClient, request


def hdr(record, name):
    """The values of header `name` (case-insensitive) in a mock record, [] when absent."""
    out = []
    for k, values in record["headers"].items():
        if k.lower() == name.lower():
            out.extend(values)
    return out


def all_values(record):
    return [v for values in record["headers"].values() for v in values]


FORGED = [
    [("X-Client-UPN", "mallory@evil.test")],
    [("x-client-upn", "mallory@evil.test")],
    [("X-CLIENT-UPN", "mallory@evil.test")],
    [("X-Client-UPN", "mallory@evil.test"), ("X-Client-UPN", "eve@evil.test")],
    [("X_Client_UPN", "mallory@evil.test")],  # IIS/CGI read '_' as '-'
    [("X-Client-UPN", "")],
]


class IdentityHeader(ProxyTestCase):
    def check_no_forgery(self, record):
        for v in all_values(record):
            self.assertNotIn("evil.test", v, record["headers"])

    def test_forged_identity_on_certificate_route_never_reaches_backend(self):
        for forged in FORGED:
            with self.subTest(headers=forged):
                m = self.mark()
                r = request(self.proxy, "GET", "/owa/?marker=" + m, cert="alice", headers=forged)
                self.assertEqual(r.status, 200, r)
                seen = self.backend_saw(m)
                self.assertEqual(len(seen), 1)
                self.assertEqual(seen[0]["identity"], "alice@lab.test")
                self.assertEqual(seen[0]["identity_count"], 1)
                self.assertEqual(hdr(seen[0], "X-Client-UPN"), ["alice@lab.test"])
                self.assertEqual(hdr(seen[0], "X_Client_UPN"), [])
                self.check_no_forgery(seen[0])

    def test_forged_identity_on_public_route_never_reaches_backend(self):
        for cert in (None, "alice"):
            for forged in FORGED:
                with self.subTest(headers=forged, cert=cert):
                    m = self.mark()
                    r = request(self.proxy, "GET", "/public/x?marker=" + m, cert=cert,
                                headers=forged)
                    self.assertNotEqual(r.status, 403, r)
                    seen = self.backend_saw(m)
                    self.assertEqual(len(seen), 1)
                    self.assertIsNone(seen[0]["identity"])
                    self.assertEqual(seen[0]["identity_count"], 0)
                    self.assertEqual(hdr(seen[0], "X-Client-UPN"), [])
                    self.check_no_forgery(seen[0])

    def test_other_trusted_identity_headers_are_removed(self):
        forged = [("X-Forwarded-Client-Cert", "Hash=1;Subject=\"CN=mallory@evil.test\""),
                  ("X-Forwarded-User", "mallory@evil.test"), ("X-Remote-User", "mallory@evil.test"),
                  ("X-Original-URL", "/ecp/evil.test"), ("X-Rewrite-URL", "/ecp/evil.test")]
        for route, cert in (("/owa/", "alice"), ("/public/x", None)):
            with self.subTest(route=route):
                m = self.mark()
                request(self.proxy, "GET", route + "?marker=" + m, cert=cert, headers=forged)
                seen = self.backend_saw(m)
                self.assertEqual(len(seen), 1)
                for name, _ in forged:
                    self.assertEqual(hdr(seen[0], name), [], name)
                self.check_no_forgery(seen[0])

    def test_authorization_removed_on_certificate_routes(self):
        for value in ("Basic bWFsbG9yeTpwYXNz", "NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw==",
                      "Negotiate YIIFAKE"):
            with self.subTest(authorization=value):
                m = self.mark()
                r = request(self.proxy, "GET", "/owa/?marker=" + m, cert="alice",
                            headers=[("Authorization", value)])
                self.assertEqual(r.status, 200, r)
                seen = self.backend_saw(m)
                self.assertEqual(len(seen), 1)
                self.assertEqual(hdr(seen[0], "Authorization"), [])
                self.assertEqual(seen[0]["identity"], "alice@lab.test")

    def test_authorization_is_no_bypass_without_certificate(self):
        for route in ("/owa/", "/ecp/", "/Microsoft-Server-ActiveSync"):
            for value in ("Basic YWxpY2U6cGFzcw==", "NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw=="):
                with self.subTest(route=route, authorization=value):
                    m = self.mark()
                    r = request(self.proxy, "GET", route + "?marker=" + m, cert=None,
                                headers=[("Authorization", value)])
                    self.assertEqual(r.status, 403, r)
                    self.assertIn(b"403.7", r.body)
                    self.assertNotForwarded(m)

    def test_authorization_kept_on_public_route(self):
        for value in ("Basic YWxpY2U6cGFzcw==", "NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw=="):
            with self.subTest(authorization=value):
                m = self.mark()
                request(self.proxy, "GET", "/public/x?marker=" + m, cert=None,
                        headers=[("Authorization", value)])
                seen = self.backend_saw(m)
                self.assertEqual(len(seen), 1)
                self.assertEqual(hdr(seen[0], "Authorization"), [value])

    def test_request_hop_by_hop_headers_do_not_reach_backend(self):
        m = self.mark()
        c = RawClient(self.proxy, "alice")
        try:
            c.send(("GET /owa/?marker=" + m + " HTTP/1.1\r\nHost: localhost\r\n"
                    "Connection: X-Foo, keep-alive, x-bar\r\nX-Foo: foo-value\r\nX-Bar: bar-value\r\n"
                    "Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\n"
                    "Proxy-Authorization: Basic cHJveHk6cGFzcw==\r\nProxy-Connection: keep-alive\r\n"
                    "X-End-To-End: kept\r\n\r\n").encode())
            r = c.read_response()
        finally:
            c.close()
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        for name in ("X-Foo", "X-Bar", "Keep-Alive", "TE", "Upgrade", "Proxy-Authorization",
                     "Proxy-Connection"):
            self.assertEqual(hdr(seen[0], name), [], name)
        for v in hdr(seen[0], "Connection"):
            self.assertNotIn("x-foo", v.lower())
        self.assertEqual(hdr(seen[0], "X-End-To-End"), ["kept"])

    def test_connection_close_from_client_is_not_forwarded(self):
        m = self.mark()
        c = RawClient(self.proxy, "alice")
        try:
            c.send(("GET /owa/?marker=" + m + " HTTP/1.1\r\nHost: localhost\r\n"
                    "Connection: close\r\n\r\n").encode())
            r = c.read_response()
        finally:
            c.close()
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(m)
        for v in hdr(seen[0], "Connection"):
            self.assertNotIn("close", v.lower())

    def test_connection_cannot_remove_host_or_content_length(self):
        body = b"0123456789" * 10
        m = self.mark()
        c = RawClient(self.proxy, "alice")
        try:
            c.send(("POST /owa/?marker=" + m + " HTTP/1.1\r\nHost: localhost\r\n"
                    "Connection: Content-Length, Host\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
            r = c.read_response()
        finally:
            c.close()
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        self.assertEqual(hdr(seen[0], "Host"), ["localhost"])
        self.assertEqual(hdr(seen[0], "Content-Length"), [str(len(body))])
        self.assertEqual(seen[0]["body_bytes"], len(body))
        self.assertTrue(seen[0]["body_complete"])

    def test_forwarding_headers_are_set_by_the_proxy(self):
        m = self.mark()
        c = RawClient(self.proxy, "alice")
        try:
            c.send(("GET /owa/?marker=" + m + " HTTP/1.1\r\nHost: mail.lab.test\r\n"
                    "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: http\r\n"
                    "X-Forwarded-Host: evil.test\r\nX-Forwarded-Port: 80\r\n"
                    "Forwarded: for=6.6.6.6;proto=http\r\nX-Real-IP: 6.6.6.6\r\n"
                    "Connection: close\r\n\r\n").encode())
            r = c.read_response()
        finally:
            c.close()
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        self.assertEqual(hdr(seen[0], "X-Forwarded-For"), ["127.0.0.1"])
        self.assertEqual(hdr(seen[0], "X-Forwarded-Proto"), ["https"])
        self.assertEqual(hdr(seen[0], "X-Forwarded-Host"), ["mail.lab.test"])
        self.assertEqual(hdr(seen[0], "Host"), ["mail.lab.test"])
        for name in ("Forwarded", "X-Real-IP", "X-Forwarded-Port"):
            self.assertEqual(hdr(seen[0], name), [], name)
        for v in all_values(seen[0]):
            self.assertNotIn("6.6.6.6", v)
            self.assertNotIn("evil.test", v)


class AuthorizationNeverLogged(ProxyTestCase):
    PROXY_SECTIONS = {"log": {"level": "debug"}}
    SECRET = "c2VjcmV0"

    def test_authorization_values_appear_in_no_log(self):
        cases = [("/owa/", "alice", 200), ("/owa/", None, 403), ("/public/x", None, None),
                 ("/public/..%2fowa/", "alice", 400), ("/owax", "alice", 404)]
        markers = []
        for path, cert, status in cases:
            for scheme in ("Basic", "NTLM", "Negotiate", "Bearer"):
                m = self.mark()
                markers.append(m)
                r = request(self.proxy, "GET", path + "?marker=" + m, cert=cert,
                            headers=[("Authorization", f"{scheme} {self.SECRET}"),
                                     ("Proxy-Authorization", f"Basic {self.SECRET}")])
                if status is not None:
                    self.assertEqual(r.status, status, (path, r))
        self.proxy.wait_access_records(len(markers))
        with open(self.proxy.access_log, encoding="utf-8", errors="replace") as f:
            access = f.read()
        self.assertIn(markers[0], access)  # the log is the right one and holds these requests
        self.assertNotIn(self.SECRET, access)
        self.assertNotIn("secret", access)
        self.assertNotIn(self.SECRET, self.proxy.process.output())


class CustomIdentityHeader(ProxyTestCase):
    PROXY_SECTIONS = {"identity": {"header": "X-Exchange-User"}}
    MOCK_ARGS = ("--identity-header", "X-Exchange-User")

    def test_only_the_proxys_custom_header_arrives(self):
        forged = [("X-Exchange-User", "mallory@evil.test"), ("x-exchange-user", "eve@evil.test"),
                  ("X_Exchange_User", "mallory@evil.test"), ("X-Client-UPN", "mallory@evil.test")]
        m = self.mark()
        r = request(self.proxy, "GET", "/owa/?marker=" + m, cert="alice", headers=forged)
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["identity"], "alice@lab.test")
        self.assertEqual(seen[0]["identity_count"], 1)
        self.assertEqual(hdr(seen[0], "X-Exchange-User"), ["alice@lab.test"])
        self.assertEqual(hdr(seen[0], "X-Client-UPN"), [])
        self.assertEqual(hdr(seen[0], "X_Exchange_User"), [])
        for v in all_values(seen[0]):
            self.assertNotIn("evil.test", v)

    def test_public_route_gets_no_identity_header(self):
        forged = [("X-Exchange-User", "mallory@evil.test"), ("X-Client-UPN", "mallory@evil.test")]
        for cert in (None, "alice"):
            with self.subTest(cert=cert):
                m = self.mark()
                request(self.proxy, "GET", "/public/x?marker=" + m, cert=cert, headers=forged)
                seen = self.backend_saw(m)
                self.assertEqual(len(seen), 1)
                self.assertIsNone(seen[0]["identity"])
                self.assertEqual(hdr(seen[0], "X-Exchange-User"), [])
                self.assertEqual(hdr(seen[0], "X-Client-UPN"), [])


# --- response hop-by-hop: the mock has no hook for arbitrary response headers, so a tiny
# stdlib backend on loopback answers with them.

class _HopBackendHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (stdlib naming)
        body = b"hop-by-hop test body\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "X-Backend-Hop, keep-alive")
        self.send_header("X-Backend-Hop", "secret-hop")
        self.send_header("Keep-Alive", "timeout=5, max=100")
        self.send_header("Proxy-Authenticate", "Basic realm=\"backend\"")
        self.send_header("Proxy-Connection", "keep-alive")
        self.send_header("Upgrade", "h2c")
        self.send_header("X-End-To-End", "kept")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _HopBackend:
    def __init__(self):
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _HopBackendHandler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.http = "127.0.0.1:%d" % self.server.server_address[1]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class ResponseHopByHop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (BIN and MOCK and PKI):
            raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-it-")
        cls.backend = _HopBackend()
        try:
            cls.proxy = Proxy(cls.tmp, [f"http://{cls.backend.http}"])
        except Exception:
            cls.backend.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        cls.backend.stop()
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_response_hop_by_hop_headers_are_dropped(self):
        c = RawClient(self.proxy, "alice")
        try:
            for _ in range(2):  # and the connection stays usable
                c.send(b"GET /owa/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
                r = c.read_response()
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, b"hop-by-hop test body\n")
                names = {k.lower() for k, _ in r.headers}
                for name in ("x-backend-hop", "keep-alive", "proxy-authenticate",
                             "proxy-connection", "upgrade"):
                    self.assertNotIn(name, names, r.headers)
                for k, v in r.headers:
                    if k.lower() == "connection":
                        self.assertNotIn("x-backend-hop", v.lower())
                self.assertEqual(r.header("X-End-To-End"), "kept")
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()

"""The whole Exchange namespace through cbagate (issue 10).

The mock Exchange authenticates /Autodiscover, /EWS, /mapi, /rpc, /OAB and /PowerShell like
IIS: NTLM (two legs, test tokens) and Negotiate bind the *backend TCP connection* to the user,
and every later request on that connection runs as that user without an Authorization header.
So cbagate must never hand a backend connection that carried NTLM or Negotiate to another
client: alice's connection is private to alice's client connection and closes with it.

Also here: Authorization passes on public and optional routes but never beside a certificate
identity; Outlook Anywhere's RPC_IN_DATA streams 200 MB with bounded proxy memory; each
virtual directory forwards only the methods Exchange uses (405 + Allow for the rest).
The 90 s MAPI NotificationWait is in test_namespace_wait.py (it runs in parallel).
"""
import base64
import hashlib
import json
import os
import unittest

from harness import (Proxy, ProxyTestCase, RawClient, metric, rss_kib, sanitized_build,
                     wait_until)

SIG = b"NTLMSSP\x00"

# Public (none) and optional virtual directories, as a deployment that lets Outlook bring its
# own NTLM/Negotiate/Basic would publish them; /PowerShell behind a certificate (require).
# Only keys that exist before issue 10, so the tests can run against the old binary too.
ROUTES = [
    {"prefix": "/EWS", "client_cert": "none"},
    {"prefix": "/Autodiscover", "client_cert": "optional"},
    {"prefix": "/mapi", "client_cert": "none"},
    {"prefix": "/rpc", "client_cert": "none"},
    {"prefix": "/OAB", "client_cert": "none"},
    {"prefix": "/PowerShell", "client_cert": "require"},
    {"prefix": "/owa", "client_cert": "require"},
    {"prefix": "/mock", "client_cert": "optional"},
]

OTHERS = 6  # clients that come after alice, with no credentials at all


def b64(raw):
    return base64.b64encode(raw).decode()


def type1():
    return b64(SIG + b"\x01\x00\x00\x00\x07\x82\x08\xa2")


def type3(challenge, user, password):
    return b64(SIG + b"\x03\x00\x00\x00" + challenge + f"{user}:{password}".encode())


def challenge_of(response, scheme="NTLM"):
    """The 8-byte challenge of the NTLM type 2 message in a 401 (WWW-Authenticate)."""
    for k, v in response.headers:
        if k.lower() == "www-authenticate" and v.lower().startswith(scheme.lower() + " "):
            raw = base64.b64decode(v.split(" ", 1)[1])
            if raw[:8] == SIG and raw[8] == 2:
                return raw[12:20]
    raise AssertionError(f"no {scheme} type 2 message in {response.headers}")


def header_values(response, name):
    return [v for k, v in response.headers if k.lower() == name.lower()]


def send(client, method, path, headers=(), body=b""):
    head = f"{method} {path} HTTP/1.1\r\nHost: mail.example.com\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    client.send(head.encode() + body)
    return client.read_response(head=method == "HEAD")


def ntlm_login(client, user, path="/EWS/Exchange.asmx", scheme="NTLM", method="POST"):
    """The two NTLM legs on one client connection; returns the final response."""
    r1 = send(client, method, path, [("Authorization", f"{scheme} {type1()}")])
    assert r1.status == 401, r1
    ch = challenge_of(r1, scheme)
    return send(client, method, path, [("Authorization", f"{scheme} {type3(ch, user, 'pw-' + user)}")])


class Namespace(ProxyTestCase):
    ROUTES = ROUTES
    PROXY_SECTIONS = {"server": {"threads": 1}}
    MOCK_ARGS = ("--threads", "2")

    def anonymous(self, path="/EWS/Exchange.asmx"):
        """One new client connection, no certificate, no credentials, one request."""
        c = RawClient(self.proxy, cert=None)
        try:
            return send(c, "POST", path, body=b"<soap/>")
        finally:
            c.close()

    def assert_not_alice(self, r, what):
        self.assertNotEqual(r.header("X-Mock-Auth-User"), "alice", f"{what}: answered as alice: {r}")
        self.assertEqual(r.status, 401, f"{what}: {r}")
        self.assertNotIn(b"alice", r.body, what)

    # --- pinning ---------------------------------------------------------------------------------

    def substitution(self, proxy, close_first):
        """alice completes NTLM; six anonymous clients then send one request each, with her
        connection still open, or after she closed it: none is answered as alice."""
        saved = self.proxy
        self.proxy = proxy
        try:
            alice = RawClient(proxy, cert=None)
            r = ntlm_login(alice, "alice")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("X-Mock-Auth-User"), "alice")
            # Her own later requests run on her authenticated backend connection.
            r = send(alice, "POST", "/EWS/Exchange.asmx", body=b"<soap/>")
            self.assertEqual((r.status, r.header("X-Mock-Auth-User"), r.header("X-Mock-Auth-Via")),
                             (200, "alice", "connection"), r)
            when = "while alice is connected"
            if close_first:
                alice.close()
                when = "after alice left"
            for i in range(OTHERS):
                self.assert_not_alice(self.anonymous(), f"client {i} {when}")
            alice.close()
        finally:
            self.proxy = saved

    def several_threads(self, close_first):
        proxy = Proxy(self.tmp, [self.mock_url()], routes=ROUTES, sections={"server": {"threads": 4}})
        try:
            self.substitution(proxy, close_first)
        finally:
            proxy.stop()

    def test_substitution_one_io_thread_alice_connected(self):
        self.substitution(self.proxy, close_first=False)

    def test_substitution_one_io_thread_alice_gone(self):
        self.substitution(self.proxy, close_first=True)

    def test_substitution_four_io_threads_alice_connected(self):
        self.several_threads(close_first=False)

    def test_substitution_four_io_threads_alice_gone(self):
        self.several_threads(close_first=True)

    def test_ntlm_and_negotiate_handshakes_pass_and_stay_with_their_client(self):
        for scheme in ("NTLM", "Negotiate"):
            with self.subTest(scheme=scheme):
                c = RawClient(self.proxy, cert=None)
                try:
                    r = ntlm_login(c, "bob", scheme=scheme)
                    self.assertEqual((r.status, r.header("X-Mock-Auth-Via")), (200, scheme), r)
                    self.assertEqual(r.header("X-Mock-Auth-User"), "bob")
                    r = send(c, "GET", "/EWS/Services.wsdl")
                    self.assertEqual((r.status, r.header("X-Mock-Auth-User")), (200, "bob"), r)
                    self.assertEqual(self.anonymous().status, 401)
                finally:
                    c.close()
        # Negotiate with a (test) Kerberos token: one leg, mutual authentication answer and
        # Persistent-Auth: true, as IIS sends them.
        c = RawClient(self.proxy, cert=None)
        try:
            token = b64(b"MOCK-KRB5:carol:pw-carol")
            r = send(c, "POST", "/mapi/emsmdb/", [("Authorization", f"Negotiate {token}"),
                                                  ("X-RequestType", "Connect")])
            self.assertEqual((r.status, r.header("X-Mock-Auth-User")), (200, "carol"), r)
            self.assertEqual(r.header("Persistent-Auth"), "true")
            self.assertTrue(any(v.startswith("Negotiate ") for v in header_values(r, "WWW-Authenticate")))
            r = send(c, "POST", "/mapi/emsmdb/", [("X-RequestType", "Execute")])
            self.assertEqual((r.status, r.header("X-Mock-Auth-User")), (200, "carol"), r)
            self.assertEqual(self.anonymous("/mapi/emsmdb/").status, 401)
        finally:
            c.close()

    def test_ntlm_continued_on_another_connection_is_refused(self):
        a = RawClient(self.proxy, cert=None)
        b = RawClient(self.proxy, cert=None)
        try:
            r1 = send(a, "POST", "/EWS/Exchange.asmx", [("Authorization", f"NTLM {type1()}")])
            self.assertEqual(r1.status, 401)
            ch = challenge_of(r1)
            r2 = send(b, "POST", "/EWS/Exchange.asmx",
                      [("Authorization", f"NTLM {type3(ch, 'alice', 'pw-alice')}")])
            self.assertEqual(r2.status, 401, r2)
            self.assertNotEqual(r2.header("X-Mock-Auth-User"), "alice")
        finally:
            a.close()
            b.close()

    def test_forged_ntlm_token_gets_the_backends_answer(self):
        c = RawClient(self.proxy, cert=None)
        try:
            r = send(c, "POST", "/EWS/Exchange.asmx", [("Authorization", "NTLM bm90IG50bG0=")])
            self.assertEqual(r.status, 401)
            self.assertIn("Negotiate", header_values(r, "WWW-Authenticate"))
            # The connection stays usable: a real handshake after it works.
            r = ntlm_login(c, "dave")
            self.assertEqual((r.status, r.header("X-Mock-Auth-User")), (200, "dave"), r)
        finally:
            c.close()

    def backend_connection_open(self, conn_id):
        host, port = self.mock.http.rsplit(":", 1)
        import http.client
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", f"/mock/connection/{conn_id}")
            return json.loads(conn.getresponse().read())["open"]
        finally:
            conn.close()

    def test_pinned_connection_closes_when_its_client_leaves(self):
        c = RawClient(self.proxy, cert=None)
        r = ntlm_login(c, "erin")
        self.assertEqual(r.status, 200, r)
        backend_conn = r.header("X-Mock-Connection")
        self.assertTrue(self.backend_connection_open(backend_conn))
        self.assertGreaterEqual(metric(self.proxy.admin, "cbagate_upstream_private_connections"), 1)
        # Still erin's while she stays.
        r = send(c, "GET", "/EWS/Services.wsdl")
        self.assertEqual((r.header("X-Mock-Connection"), r.header("X-Mock-Auth-User")),
                         (backend_conn, "erin"), r)
        c.close()
        wait_until(lambda: not self.backend_connection_open(backend_conn), timeout=15,
                   what=f"backend connection {backend_conn} closed after its client left")
        wait_until(lambda: metric(self.proxy.admin, "cbagate_upstream_private_connections") == 0,
                   timeout=15, what="no private connection left")
        # The log says which requests ran on a private connection.
        recs = wait_until(lambda: [x for x in self.proxy.access_records()
                                   if x.get("upstream_conn") == "private"], what="private lines")
        self.assertTrue(recs)
        self.assertGreaterEqual(metric(self.proxy.admin, "cbagate_upstream_pinned_requests_total"), 2)

    # --- Authorization pass-through --------------------------------------------------------------

    def test_basic_passes_on_public_and_optional_routes_never_on_require(self):
        basic = "Basic " + b64(b"frank:pw-frank")
        c = RawClient(self.proxy, cert=None)
        try:
            r = send(c, "GET", "/EWS/Exchange.asmx", [("Authorization", basic)])
            self.assertEqual((r.status, r.header("X-Mock-Auth-User"), r.header("X-Mock-Auth-Via")),
                             (200, "frank", "Basic"), r)
            # Optional route, no certificate: passes too.
            r = send(c, "GET", "/Autodiscover/Autodiscover.xml", [("Authorization", basic)])
            self.assertEqual((r.status, r.header("X-Mock-Auth-User")), (200, "frank"), r)
        finally:
            c.close()
        # Optional route with a certificate: the identity is forwarded, Authorization is not.
        c = RawClient(self.proxy, cert="alice")
        try:
            r = send(c, "GET", "/Autodiscover/Autodiscover.xml", [("Authorization", basic)])
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("X-Mock-Auth-Via"), "header")
            self.assertNotEqual(r.header("X-Mock-Auth-User"), "frank")
            # Require route: never, with or without a certificate.
            r = send(c, "GET", "/PowerShell/", [("Authorization", basic)])
            self.assertEqual(r.header("X-Mock-Auth-Via"), "header", r)
        finally:
            c.close()
        c = RawClient(self.proxy, cert=None)
        try:
            r = send(c, "GET", "/PowerShell/", [("Authorization", basic)])
            self.assertEqual(r.status, 403)
        finally:
            c.close()
        seen = [x for x in self.mock.requests() if x["path"].startswith("/PowerShell")]
        self.assertTrue(seen)
        for rec in seen:
            self.assertNotIn("Authorization", rec["headers"], rec)

    # --- methods and Outlook Anywhere ------------------------------------------------------------

    def test_methods_per_virtual_directory_405_with_allow(self):
        c = RawClient(self.proxy, cert=None)
        try:
            r = send(c, "POST", "/rpc/rpcproxy.dll?mail:6001")
            self.assertEqual(r.status, 405, r)
            self.assertEqual(r.header("Allow"), "GET, HEAD, RPC_IN_DATA, RPC_OUT_DATA")
            r = send(c, "PUT", "/EWS/Exchange.asmx")
            self.assertEqual(r.status, 405, r)
            self.assertEqual(r.header("Allow"), "GET, HEAD, POST")
            r = send(c, "POST", "/OAB/x/oab.xml")
            self.assertEqual((r.status, r.header("Allow")), (405, "GET, HEAD"), r)
        finally:
            c.close()

    def test_rpc_out_data_streams(self):
        c = RawClient(self.proxy, cert=None)
        try:
            r = ntlm_login(c, "gina", path="/rpc/rpcproxy.dll?mail:6001", method="RPC_IN_DATA")
            self.assertEqual(r.status, 200, r)
            r = send(c, "RPC_OUT_DATA", "/rpc/rpcproxy.dll?mail:6001&bytes=1048576", body=b"x" * 76)
            self.assertEqual((r.status, len(r.body)), (200, 1048576), r)
            self.assertEqual(r.header("X-Mock-Auth-User"), "gina")
        finally:
            c.close()

    def test_rpc_in_data_200_mb_streams_with_bounded_memory(self):
        total = 200 * 1024 * 1024
        piece = os.urandom(64 * 1024)
        c = RawClient(self.proxy, cert=None, timeout=120)
        try:
            r = ntlm_login(c, "hank", path="/rpc/rpcproxy.dll?mail:6001", method="RPC_IN_DATA")
            self.assertEqual(r.status, 200, r)
            rss0 = rss_kib(self.proxy.process.pid)
            c.send((f"RPC_IN_DATA /rpc/rpcproxy.dll?mail:6001 HTTP/1.1\r\nHost: mail.example.com\r\n"
                    f"Content-Length: {total}\r\n\r\n").encode())
            peak = rss0
            h = hashlib.sha256()
            sent = 0
            while sent < total:
                c.send(piece)
                h.update(piece)
                sent += len(piece)
                if sent % (8 * 1024 * 1024) == 0:
                    peak = max(peak, rss_kib(self.proxy.process.pid))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            body = json.loads(r.body)
            self.assertEqual((body["user"], body["body_bytes"], body["body_sha256"]),
                             ("hank", total, h.hexdigest()))
            grew = peak - rss0
            print(f"rpc_in_data: 200 MiB relayed; proxy RSS {rss0} KiB, peak growth {grew} KiB")
            if not sanitized_build():
                self.assertLess(grew, 16 * 1024, "proxy memory grew with the body")
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()

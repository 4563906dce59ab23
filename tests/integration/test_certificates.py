"""Every certs-dev identity against every certificate route: status, IIS substatus, what the
backend saw, and what the access log says."""
import os
import unittest

from harness import PKI, ProxyTestCase, request

SUBSTATUS = {"ok": 0, "no_upn": 16, "multi_upn": 16, "bad_upn_encoding": 16, "wrong_eku": 16,
             "expired": 17, "not_yet_valid": 17, "untrusted": 16, "revoked": 13}
ROUTES = ["/owa/", "/ecp/", "/Microsoft-Server-ActiveSync?Cmd=Ping&marker="]


def manifest():
    rows = []
    with open(os.path.join(PKI, "manifest.tsv")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, expected, upn = line.rstrip("\n").split("\t")[:3]
            if name == "name":
                continue
            rows.append((name, expected, upn))
    return rows


class CertificateMatrix(ProxyTestCase):
    def test_every_identity_on_every_certificate_route(self):
        rows = manifest()
        self.assertGreaterEqual(len(rows), 14)
        for name, expected, upn in rows:
            for route in ROUTES:
                with self.subTest(identity=name, route=route):
                    m = self.mark()
                    path = route + m if route.endswith("=") else route + "?marker=" + m
                    method = "OPTIONS" if "ActiveSync" in route else "GET"
                    r = request(self.proxy, method, path, cert=name)
                    if expected == "ok":
                        self.assertEqual(r.status, 200, r)
                        seen = self.backend_saw(m)
                        self.assertEqual(len(seen), 1)
                        self.assertEqual(seen[0]["identity"], upn)
                    else:
                        self.assertEqual(r.status, 403, r)
                        self.assertIn(f"403.{SUBSTATUS[expected]}".encode(), r.body)
                        self.assertNotForwarded(m)

    def test_no_certificate_is_403_7_and_never_forwarded(self):
        for route in ("/owa/", "/ecp/", "/Microsoft-Server-ActiveSync"):
            with self.subTest(route=route):
                m = self.mark()
                r = request(self.proxy, "GET", route + "?marker=" + m, cert=None)
                self.assertEqual(r.status, 403)
                self.assertIn(b"403.7", r.body)
                self.assertNotForwarded(m)

    def test_public_route_needs_no_certificate_and_carries_no_identity(self):
        for cert in (None, "alice", "revoked"):
            with self.subTest(cert=cert):
                m = self.mark()
                r = request(self.proxy, "GET", "/owa/healthcheck.htm?marker=" + m, cert=cert)
                self.assertEqual(r.status, 200, r)
                seen = self.backend_saw(m)
                self.assertEqual(len(seen), 1)
                self.assertIsNone(seen[0]["identity"])

    def test_optional_route_forwards_identity_only_when_valid(self):
        m = self.mark()
        r = request(self.proxy, "GET", "/mock/status/200?marker=" + m, cert=None)
        self.assertEqual(r.status, 200)
        self.assertIsNone(self.backend_saw(m)[0]["identity"])
        m = self.mark()
        r = request(self.proxy, "GET", "/mock/status/200?marker=" + m, cert="bob")
        self.assertEqual(r.status, 200)
        self.assertEqual(self.backend_saw(m)[0]["identity"], "bob@lab.test")
        # A bad certificate is refused, not silently treated as anonymous.
        m = self.mark()
        r = request(self.proxy, "GET", "/mock/status/200?marker=" + m, cert="expired")
        self.assertEqual(r.status, 403)
        self.assertIn(b"403.17", r.body)
        self.assertNotForwarded(m)

    def test_access_log_names_upn_serial_issuer_and_substatus(self):
        m = self.mark()
        request(self.proxy, "GET", "/owa/?marker=" + m, cert="alice")
        m2 = self.mark()
        request(self.proxy, "GET", "/owa/?marker=" + m2, cert="revoked")
        recs = self.proxy.wait_access_records(2)
        mine = {r["query"].split("=")[-1]: r for r in self.proxy.access_records() if "marker=" in r["query"]}
        ok = mine[m]
        self.assertEqual(ok["upn"], "alice@lab.test")
        self.assertEqual(ok["status"], 200)
        self.assertEqual(ok["route"], "/owa")
        self.assertTrue(ok["cert_serial"])
        self.assertIn("Issuing CA", ok["cert_issuer"])
        self.assertTrue(ok["upstream"].startswith("http://127.0.0.1:"))
        bad = mine[m2]
        self.assertEqual(bad["status"], 403)
        self.assertEqual(bad["substatus"], 13)
        self.assertEqual(bad["error"], "revoked")
        self.assertEqual(bad["upstream"], "")
        del recs


if __name__ == "__main__":
    unittest.main()

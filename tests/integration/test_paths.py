"""Path normalization is never a bypass: every spelling of a certificate route lands on that
route (refused without a certificate, forwarded with the canonical path with one), every
ambiguous or hostile spelling is a 400 that never reaches the backend, and unknown paths are 404.

Targets go out byte for byte through RawClient: http.client would refuse or re-encode some."""
import unittest

from harness import ProxyTestCase, RawClient


def get(proxy, target, cert="alice", method="GET"):
    """One request with exactly `target` on the request line; returns the response."""
    c = RawClient(proxy, cert)
    try:
        c.send(f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
               .encode("latin-1"))
        return c.read_response(head=method == "HEAD")
    finally:
        c.close()


def with_marker(target, marker):
    return target + ("&" if "?" in target else "?") + "marker=" + marker


# Spelling sent -> canonical path the backend must receive (case is kept: IIS matches
# case-insensitively, the backend sees what the client wrote, minus the ambiguity).
OWA_SPELLINGS = [
    ("/OWA/", "/OWA/"),
    ("/%6Fwa/", "/owa/"),
    ("/%6fWA/", "/oWA/"),
    ("//owa/", "/owa/"),
    ("/./owa/", "/owa/"),
    ("/public/../owa/", "/owa/"),
    ("/PUBLIC/../owa/", "/owa/"),
    ("/public/%2e%2e/owa/", "/owa/"),
    ("/public/.%2E/owa/", "/owa/"),
    ("/public/./../owa/", "/owa/"),
    ("/owa//x/./y/../z", "/owa/x/z"),
    ("/owa/healthcheck.htm/../x", "/owa/x"),
    ("/Owa?x=1", "/Owa"),
]

# Hostile or ambiguous spellings: 400, never forwarded, with or without a certificate.
ATTACKS = [
    "/public/..%2fowa/",       # encoded '/' would let a backend decode a second separator
    "/public/..%2Fowa/",
    "/public/..%5cowa/",       # encoded '\' (IIS reads '\' as '/')
    "/owa%00/",                # NUL truncation
    "/%2e%2e/owa/",            # dot segment above the root
    "/..",
    "/owa/../..",
    "/owa\\x",                 # raw backslash
    "/owa/%252e%252e/ecp",     # double encoding
    "/owa/%25%32%65%25%32%65/ecp",
    "/%c0%ae%c0%ae/owa",       # overlong UTF-8 '.'
    "/owa%",                   # truncated escape
    "/owa%g1",                 # non-hex escape
    "/owa./",                  # Windows drops trailing dots
]


class PathNormalization(ProxyTestCase):
    def test_owa_spellings_without_certificate_are_403_7_and_not_forwarded(self):
        for spelling, canonical in OWA_SPELLINGS:
            with self.subTest(target=spelling):
                m = self.mark()
                r = get(self.proxy, with_marker(spelling, m), cert=None)
                self.assertEqual(r.status, 403, r)
                self.assertIn(b"403.7", r.body)
                self.assertNotForwarded(m)
                self.assertEqual(self.proxy_logged(m)["route"], "/owa")

    def test_owa_spellings_with_certificate_are_forwarded_canonical(self):
        for spelling, canonical in OWA_SPELLINGS:
            with self.subTest(target=spelling):
                m = self.mark()
                target = with_marker(spelling, m)
                r = get(self.proxy, target, cert="alice")
                self.assertEqual(r.status, 200, r)
                seen = self.backend_saw(m)
                self.assertEqual(len(seen), 1, seen)
                self.assertEqual(seen[0]["path"], canonical)
                self.assertEqual(seen[0]["query"], target.split("?", 1)[1])
                self.assertEqual(seen[0]["target"], canonical + "?" + target.split("?", 1)[1])
                self.assertEqual(seen[0]["identity"], "alice@lab.test")
                logged = self.proxy_logged(m)
                self.assertEqual(logged["route"], "/owa")
                self.assertEqual(logged["path"], canonical)

    def test_query_is_forwarded_byte_for_byte(self):
        m = self.mark()
        query = "x=1&y=%2f..%2E&z=a+b&w=%252e&v=/../ecp&marker=" + m
        r = get(self.proxy, "/Owa?" + query)
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["target"], "/Owa?" + query)
        self.assertEqual(seen[0]["query"], query)

    def test_public_route_is_no_way_into_owa(self):
        for spelling in ("/public/../owa/", "/public/%2e%2e/owa/", "/public/x/../../owa/"):
            with self.subTest(target=spelling):
                m = self.mark()
                r = get(self.proxy, with_marker(spelling, m), cert=None)
                self.assertEqual(r.status, 403, r)
                self.assertIn(b"403.7", r.body)
                self.assertNotForwarded(m)
        # The public route itself needs no certificate.
        m = self.mark()
        r = get(self.proxy, with_marker("/public/x", m), cert=None)
        self.assertNotEqual(r.status, 403, r)
        self.assertEqual(len(self.backend_saw(m)), 1)

    def test_attacks_are_400_and_never_forwarded(self):
        for cert in (None, "alice"):
            for attack in ATTACKS:
                with self.subTest(target=attack, cert=cert):
                    m = self.mark()
                    before = self.access_count()
                    r = get(self.proxy, with_marker(attack, m), cert=cert)
                    self.assertEqual(r.status, 400, r)
                    self.assertNotForwardedSince(m, before)

    def test_asterisk_form_is_400(self):
        for cert in (None, "alice"):
            with self.subTest(cert=cert):
                before_mock = len(self.mock.requests())
                before = self.access_count()
                r = get(self.proxy, "*", cert=cert, method="OPTIONS")
                self.assertEqual(r.status, 400, r)
                self.assertNotForwardedSince("\0never\0", before)
                self.assertEqual(len(self.mock.requests()), before_mock)

    def test_absolute_form_is_forwarded_in_origin_form(self):
        m = self.mark()
        r = get(self.proxy, "https://localhost/owa/?marker=" + m)
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["target"], "/owa/?marker=" + m)
        self.assertEqual(seen[0]["path"], "/owa/")
        self.assertEqual(seen[0]["identity"], "alice@lab.test")
        # ... and gets the certificate policy of the path it names.
        m = self.mark()
        r = get(self.proxy, "https://localhost/OWA/../owa/?marker=" + m, cert=None)
        self.assertEqual(r.status, 403, r)
        self.assertIn(b"403.7", r.body)
        self.assertNotForwarded(m)

    def test_unknown_paths_are_404_and_not_forwarded(self):
        for cert in ("alice", None):
            for path in ("/owax", "/ow", "/", "/owa.bak/", "/public2"):
                with self.subTest(path=path, cert=cert):
                    m = self.mark()
                    r = get(self.proxy, with_marker(path, m), cert=cert)
                    self.assertEqual(r.status, 404, r)
                    self.assertNotForwarded(m)


if __name__ == "__main__":
    unittest.main()

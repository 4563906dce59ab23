"""Directory mapping (issue 12) through the proxy: every verdict as the client sees it (403.12
with its code, nothing forwarded), the directory down or too slow (503 + Retry-After, nothing
forwarded), failover, the verdict cache (a warm request costs no LDAP round trip) and its
expiry cutting off a disabled account on a kept-alive connection."""
import os
import time
import unittest

import harness
from harness import ProxyTestCase, PKI, Client, request, wait_until, metric
from directory_lab import DirectoryLab, Slapd, password_file, SVC_DN, BASE_DN


def directory_sections(tmp, uris, **extra):
    d = {"uris": uris, "base_dn": BASE_DN, "bind": "simple", "bind_dn": SVC_DN,
         "password_file": password_file(tmp), "tls": "none", "timeout": "2s"}
    d.update(extra)
    return {"auth": {"mapping": "directory"}, "directory": d,
            "tls": {"crl": []}, "revocation": {"mode": "off"}}


class DirectoryCase(ProxyTestCase):
    DIRECTORY = {}
    AUTH = {}
    URIS = None

    @classmethod
    def extra_accounts(cls, lab):
        """More certificates and accounts for one class (lab.issue, lab.add_account)."""

    @classmethod
    def setUpClass(cls):
        import tempfile
        if not (harness.BIN and harness.MOCK and PKI):
            raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")
        cls.labdir = tempfile.mkdtemp(prefix="cbagate-dirlab-")
        cls.lab = DirectoryLab(cls.labdir, PKI)
        cls.extra_accounts(cls.lab)
        cls.ldap = Slapd(cls.labdir, "slapd", [cls.lab.users_ldif()])
        uris = cls.URIS(cls) if cls.URIS else [cls.ldap.uri]
        cls.PROXY_SECTIONS = directory_sections(cls.labdir, uris, **cls.DIRECTORY)
        cls.PROXY_SECTIONS["auth"].update(cls.AUTH)
        try:
            super().setUpClass()
        except BaseException:
            cls.ldap.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.ldap.stop()
        import shutil
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.labdir, ignore_errors=True)

    def cert(self, name):
        return self.lab.users[name]["cert"]


class Verdicts(DirectoryCase):
    def test_every_verdict_as_the_client_sees_it(self):
        for name, expected in self.lab.expect.items():
            with self.subTest(name=name):
                marker = self.mark()
                r = request(self.proxy, "GET", f"/owa/?{marker}", cert=self.cert(name))
                rec = self.proxy_logged(marker)
                if expected == "allowed":
                    self.assertEqual(r.status, 200, r)
                    seen = self.backend_saw(marker)
                    self.assertEqual(len(seen), 1)
                    self.assertEqual(rec.get("extra", {}).get("account"), name)
                else:
                    self.assertEqual(r.status, 403, r)
                    self.assertTrue(r.body.startswith(b"403.12 Forbidden"), r.body)
                    self.assertIn(f"(cbagate: {expected})".encode(), r.body)
                    self.assertEqual(rec.get("error"), expected)
                    self.assertEqual(rec.get("substatus"), 12)
                    self.assertNotForwarded(marker)

    def test_injection_upn_is_not_found_not_alice(self):
        marker = self.mark()
        r = request(self.proxy, "GET", f"/owa/?{marker}", cert=self.cert("inject"))
        self.assertEqual(r.status, 403)
        self.assertIn(b"(cbagate: not_found)", r.body)
        self.assertNotForwarded(marker)

    def test_warm_path_costs_no_lookup(self):
        request(self.proxy, "GET", "/owa/", cert=self.cert("eve"))
        before = metric(self.proxy.admin, 'cbagate_directory_lookups_total{verdict="allowed"}')
        hits = metric(self.proxy.admin, "cbagate_directory_cache_hits_total")
        for _ in range(5):
            self.assertEqual(request(self.proxy, "GET", "/owa/", cert=self.cert("eve")).status, 200)
        self.assertEqual(metric(self.proxy.admin, 'cbagate_directory_lookups_total{verdict="allowed"}'),
                         before)
        self.assertGreaterEqual(metric(self.proxy.admin, "cbagate_directory_cache_hits_total"), hits + 5)

    def test_public_route_needs_no_directory(self):
        # carol is disabled, but a route without certificate policy forwards no identity and
        # asks no directory.
        marker = self.mark()
        r = request(self.proxy, "GET", f"/public/x?{marker}", cert=self.cert("carol"))
        self.assertNotIn(r.status, (403, 503), r)
        self.assertEqual(len(self.backend_saw(marker)), 1)
        self.assertIsNone(self.proxy_logged(marker).get("extra", {}).get("directory"))


class UpnFromDirectory(DirectoryCase):
    """auth.upn_sources = ["san", "directory"]: a certificate without a UPN (a device
    certificate) is located by its strong altSecurityIdentities strings; the account's
    userPrincipalName is the user the backend sees."""
    AUTH = {"upn_sources": ["san", "directory"]}

    @classmethod
    def extra_accounts(cls, lab):
        nora = lab.issue("nora", None)       # strongly mapped by thumbprint, UPN in AD only
        lab.issue("ghost", None)             # no account holds its strings
        weak = lab.issue("wendy", None)      # only a weak mapping
        nameless = lab.issue("nameless", None)  # strongly mapped, the account has no UPN
        lab.add_account("nora", "nora@lab.test", alt=[nora["sha1"]])
        lab.add_account("wendy", "wendy@lab.test", alt=[weak["weak"]])
        lab.add_account("nameless", None, alt=[nameless["ski"]])

    def test_certificate_without_upn_is_the_account_that_holds_its_strong_string(self):
        marker = self.mark()
        r = request(self.proxy, "GET", f"/owa/?{marker}", cert=self.cert("nora"))
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(marker)
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["identity"], "nora@lab.test")
        rec = self.proxy_logged(marker)
        self.assertEqual(rec.get("upn"), "nora@lab.test")
        self.assertEqual(rec["extra"].get("upn_from"), "directory")
        self.assertEqual(rec["extra"].get("account"), "nora")

    def test_a_certificate_with_a_upn_is_still_located_by_it(self):
        marker = self.mark()
        r = request(self.proxy, "GET", f"/owa/?{marker}", cert=self.cert("alice"))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.backend_saw(marker)[0]["identity"], "alice@lab.test")
        self.assertIsNone(self.proxy_logged(marker)["extra"].get("upn_from"))

    def test_refusals(self):
        # ghost: no account; wendy: a weak string never locates; nameless: header mode needs a UPN.
        for name, code in (("ghost", "not_found"), ("wendy", "not_found"), ("nameless", "no_upn")):
            with self.subTest(name=name):
                marker = self.mark()
                r = request(self.proxy, "GET", f"/owa/?{marker}", cert=self.cert(name))
                self.assertEqual(r.status, 403, r)
                self.assertTrue(r.body.startswith(b"403.12 Forbidden"), r.body)
                rec = self.proxy_logged(marker)
                self.assertEqual(rec.get("error"), code)
                self.assertIsNone(rec.get("upn"))
                self.assertNotForwarded(marker)


class WithoutDirectorySource(DirectoryCase):
    """The default sources: a certificate without a UPN is refused before any lookup."""

    @classmethod
    def extra_accounts(cls, lab):
        nora = lab.issue("nora", None)
        lab.add_account("nora", "nora@lab.test", alt=[nora["sha1"]])

    def test_no_upn_is_403_16_without_asking_the_directory(self):
        before = metric(self.proxy.admin, 'cbagate_directory_lookups_total{verdict="allowed"}') or 0
        marker = self.mark()
        r = request(self.proxy, "GET", f"/owa/?{marker}", cert=self.cert("nora"))
        self.assertEqual(r.status, 403, r)
        self.assertEqual(self.proxy_logged(marker).get("error"), "no_upn")
        self.assertEqual(self.proxy_logged(marker).get("substatus"), 16)
        self.assertEqual(metric(self.proxy.admin, 'cbagate_directory_lookups_total{verdict="allowed"}') or 0,
                         before)
        self.assertNotForwarded(marker)


class Failover(DirectoryCase):
    URIS = lambda cls: [f"ldap://127.0.0.1:{harness.dead_port()}", cls.ldap.uri]  # noqa: E731

    def test_second_uri_answers_when_the_first_is_down(self):
        r = request(self.proxy, "GET", "/owa/", cert=self.cert("alice"))
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(
            metric(self.proxy.admin, f'cbagate_directory_errors_total{{uri="{self.PROXY_SECTIONS["directory"]["uris"][0]}"}}'), 1)


class DirectoryDown(DirectoryCase):
    URIS = lambda cls: [f"ldap://127.0.0.1:{harness.dead_port()}",  # noqa: E731
                        f"ldap://127.0.0.1:{harness.dead_port()}"]

    def test_no_directory_is_503_never_a_pass(self):
        marker = self.mark()
        r = request(self.proxy, "GET", f"/owa/?{marker}", cert=self.cert("alice"))
        self.assertEqual(r.status, 503, r)
        self.assertIsNotNone(r.header("Retry-After"))
        self.assertIn(b"directory_unavailable", r.body)
        self.assertEqual(self.proxy_logged(marker).get("error"), "directory_unavailable")
        self.assertNotForwarded(marker)


class SlowDirectory(DirectoryCase):
    DIRECTORY = {"timeout": "1s"}

    def test_a_directory_that_does_not_answer_gives_503_at_the_deadline(self):
        self.ldap.pause()  # SIGSTOP: connections are accepted by the kernel, nothing answers
        try:
            marker = self.mark()
            t0 = time.monotonic()
            r = request(self.proxy, "GET", f"/owa/?{marker}", cert=self.cert("alice"))
            took = time.monotonic() - t0
            self.assertEqual(r.status, 503, r)
            self.assertLess(took, 30)  # bounded by directory.timeout, generous for a loaded host
            self.assertNotForwarded(marker)
        finally:
            self.ldap.resume()
        # The directory back: the next request is mapped (unavailable was not cached).
        r = wait_until(lambda: (x := request(self.proxy, "GET", "/owa/", cert=self.cert("alice")))
                       .status == 200 and x, timeout=30, what="mapping after the directory resumed")
        self.assertEqual(r.status, 200)


class CacheExpiry(DirectoryCase):
    DIRECTORY = {"cache_ttl": "1s"}

    def test_disabled_account_is_cut_off_on_a_kept_alive_connection(self):
        c = Client(self.proxy, cert=self.cert("fiona"))
        try:
            self.assertEqual(c.request("GET", "/owa/").status, 200)
            self.ldap.modify(f"dn: CN=fiona,CN=Users,{BASE_DN}\nchangetype: modify\n"
                             "replace: userAccountControl\nuserAccountControl: 514\n")
            sock = c.sock

            def refused():
                r = c.request("GET", "/owa/")
                return r if r.status == 403 else None
            r = wait_until(refused, timeout=30, what="the disabled account refused")
            self.assertIn(b"(cbagate: disabled)", r.body)
            self.assertIs(c.sock, sock, "the same kept-alive connection")
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()

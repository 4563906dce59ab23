"""Refusals a helpdesk can read (issue 13): one code per cause on the 403 page and in the access
log, a request id on the page that finds the log line, the refused certificate's issuer and
serial in that line; a stale CRL says "revocation status unknown" (never "revoked");
refused handshakes of tls.client_cert = "require" reach the access log."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import admin_get, PKI, Mock, Proxy, ProxyTestCase, client_context, request, wait_until
from test_certificates import manifest
from test_tls import attempt

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# manifest.tsv's expected class -> (code on the page and in the log, IIS substatus)
CODES = {"no_upn": ("no_upn", 16), "multi_upn": ("multiple_upn", 16), "bad_upn_encoding": ("bad_upn", 16),
         "wrong_eku": ("wrong_eku", 16), "expired": ("expired", 17), "not_yet_valid": ("not_yet_valid", 17),
         "untrusted": ("untrusted_issuer", 16), "revoked": ("revoked", 13)}


def request_id(body):
    m = re.search(rb"request id: (\d+)-(\d+)\n", body)
    return (int(m.group(1)), int(m.group(2))) if m else None


class Refusals(ProxyTestCase):
    def test_each_cause_has_its_own_code_page_and_log_fields(self):
        rows = [r for r in manifest() if r[1] != "ok"]
        self.assertGreaterEqual(len(rows), 8)
        codes_seen = set()
        for name, expected, _ in rows:
            with self.subTest(identity=name):
                code, sub = CODES[expected]
                if name == "self-signed":
                    code = "self_signed"  # untrusted, but the page says why: no CA issued it
                m = self.mark()
                r = request(self.proxy, "GET", "/owa/?marker=" + m, cert=name)
                self.assertEqual(r.status, 403, r)
                self.assertIn(f"403.{sub} Forbidden: ".encode(), r.body)
                self.assertIn(f"(cbagate: {code})\n".encode(), r.body)
                rid = request_id(r.body)
                self.assertIsNotNone(rid, r.body)
                rec = self.proxy_logged(m)
                self.assertEqual(rec["error"], code)
                self.assertEqual(rec["substatus"], sub)
                self.assertEqual((rec["conn_id"], rec["req_id"]), rid)
                self.assertTrue(rec["cert_issuer"], rec)
                self.assertTrue(rec["cert_serial"], rec)
                self.assertNotForwarded(m)
                codes_seen.add(code)
        # Causes the old page lumped together as verify_failed now read apart.
        for c in ("no_upn", "multiple_upn", "wrong_eku", "untrusted_issuer", "self_signed", "not_yet_valid"):
            self.assertIn(c, codes_seen)

    def test_verify_reason_is_in_the_process_log(self):
        m = self.mark()
        r = request(self.proxy, "GET", "/owa/?marker=" + m, cert="untrusted")
        self.assertEqual(r.status, 403)
        rid = request_id(r.body)
        wait_until(lambda: re.search(rf"conn={rid[0]} req={rid[1]} certificate refused: untrusted_issuer .*: .+",
                                     self.proxy.process.output()),
                   what="the refusal with the verifier's reason in the process log")

    def test_no_certificate_page_has_a_request_id(self):
        m = self.mark()
        r = request(self.proxy, "GET", "/owa/?marker=" + m, cert=None)
        self.assertEqual(r.status, 403)
        self.assertIn(b"(cbagate: no_certificate)", r.body)
        rec = self.proxy_logged(m)
        self.assertEqual((rec["conn_id"], rec["req_id"]), request_id(r.body))


class StaleCrl(unittest.TestCase):
    """A CRL past its nextUpdate: "revocation status unknown", never "revoked"; /readyz says why."""

    @classmethod
    def setUpClass(cls):
        if not PKI:
            raise unittest.SkipTest("CBAGATE_TEST_PKI must be set")
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-stale-")
        cls.pki = os.path.join(cls.tmp, "pki")
        shutil.copytree(PKI, cls.pki)
        subprocess.run([os.path.join(REPO, "certs-dev", "revoke"), "--next-update", "-1 hour",
                        "--last-update", "-2 days", "--crl", "issuing", cls.pki], check=True, capture_output=True)
        cls.mock = Mock(cls.tmp, heartbeat_cap=1)
        try:
            cls.proxy = Proxy(cls.tmp, [f"http://{cls.mock.http}"], sections={
                "tls": {"crl": [os.path.join(cls.pki, "crl", "issuing.crl.pem"),
                                os.path.join(cls.pki, "crl", "root.crl.pem")]},
                "revocation": {"fetch_cdp": False}})
        except BaseException:
            cls.mock.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        cls.mock.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_page_says_unknown_not_revoked(self):
        r = request(self.proxy, "GET", "/owa/?marker=stale1", cert="alice")
        self.assertEqual(r.status, 403, r)
        self.assertIn(b"403.13", r.body)
        self.assertIn(b"revocation status unknown", r.body)
        self.assertIn(b"(cbagate: revocation_unknown)", r.body)
        self.assertNotIn(b"revoked", r.body)
        rec = wait_until(lambda: next((x for x in self.proxy.access_records() if "stale1" in x["query"]), None))
        self.assertEqual(rec["error"], "revocation_unknown")

    def test_readyz_is_not_ready_and_says_why(self):
        status, body = admin_get(self.proxy, "/readyz")
        self.assertEqual(status, 503, body)
        self.assertIn("not ready: revocation status unknown for every client certificate", body)
        self.assertIn("CN=cbagate Lab Issuing CA", body)

    def test_loaded_stale_is_a_warning(self):
        self.assertRegex(self.proxy.process.output(), r"\[warning\] \[main\] startup: tls\.crl\[0\]: .* is STALE")


class RequireModeHandshakes(ProxyTestCase):
    PROXY_SECTIONS = {"tls": {"client_cert": "require"}}

    def test_refused_handshake_reaches_the_access_log(self):
        before = self.access_count()
        kind, _ = attempt(self.proxy, client_context("untrusted"))
        self.assertIn(kind, ("handshake", "request"))
        recs = wait_until(lambda: (x := self.proxy.access_records()) and len(x) > before and x,
                          what="an access-log line for the refused handshake")
        rec = recs[-1]
        self.assertEqual(rec["error"], "untrusted_issuer")
        self.assertEqual(rec["status"], 0)
        self.assertTrue(rec["cert_serial"])

if __name__ == "__main__":
    unittest.main()

"""Issue 16: the TLS defaults a scanner finds clean (Mozilla "intermediate": TLS 1.2 with ECDHE
and AEAD only, TLS 1.3, groups X25519/P-256/P-384), OCSP stapling of the server certificate
("auto": fetched from its AIA, verified by openssl's own tools; "file"; "off") and HSTS per
route (off by default)."""
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import unittest

from harness import (BIN, MOCK, PKI, Mock, Proxy, ProxyTestCase, RevocationPki, client_context,
                     wait_until)
from test_tls import attempt, fetch

CBC_ONLY = ("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:"
            "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:"
            "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:AES128-SHA:AES256-SHA:"
            "AES128-SHA256:AES256-SHA256")


def tls12(ciphers):
    ctx = client_context("alice", tls_max=ssl.TLSVersion.TLSv1_2, tls_min=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers(ciphers)
    return ctx


def s_client(port, *args, ca=None, timeout=30):
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
           "-CAfile", ca or os.path.join(PKI, "ca", "root.pem"), *args]
    return subprocess.run(cmd, input=b"", capture_output=True, timeout=timeout)


class Defaults(ProxyTestCase):
    """The proxy of ProxyTestCase leaves every cipher, suite and group key at its default."""

    def test_client_offering_only_cbc_suites_is_refused(self):
        m = self.mark()
        kind, err = attempt(self.proxy, tls12(CBC_ONLY), f"/owa/?marker={m}")
        self.assertEqual(kind, "handshake", err)
        # The proxy's handshake_failure alert (no shared cipher), not a client-side refusal.
        self.assertIn("HANDSHAKE_FAILURE", str(err))
        self.assertEqual([r for r in self.mock.requests() if m in (r.get("target") or "")], [])

    def test_client_offering_static_rsa_or_dhe_only_is_refused(self):
        for suites in ("AES128-GCM-SHA256:AES256-GCM-SHA384", "DHE-RSA-AES128-GCM-SHA256"):
            with self.subTest(suites=suites):
                kind, err = attempt(self.proxy, tls12(suites))
                self.assertEqual(kind, "handshake", err)

    def test_tls12_ecdhe_aead_works(self):
        for suite in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                      "ECDHE-ECDSA-CHACHA20-POLY1305"):
            with self.subTest(suite=suite):
                r = fetch(self.proxy, tls12(suite), "/owa/")
                self.assertEqual(r.status, 200, r)

    def test_only_x25519_p256_p384_groups(self):
        for group, ok in (("X25519", True), ("P-256", True), ("P-384", True), ("P-521", False),
                          ("ffdhe2048", False)):
            with self.subTest(group=group):
                r = s_client(self.proxy.port, "-tls1_3", "-groups", group)
                out = r.stdout.decode(errors="replace")
                self.assertEqual(ok, r.returncode == 0 and "Verify return code: 0" in out,
                                 out[-2000:] + r.stderr.decode(errors="replace")[-2000:])

    def test_no_hsts_unless_configured(self):
        r = fetch(self.proxy, client_context("alice"), "/owa/")
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(b"strict-transport-security", r.raw.split(b"\r\n\r\n")[0].lower())


class OverriddenCiphers(ProxyTestCase):
    """Still overridable: tls.ciphers = "" is OpenSSL's default list again (CBC accepted)."""
    PROXY_SECTIONS = {"tls": {"ciphers": "", "groups": ""}}

    def test_cbc_suite_accepted_when_the_operator_asks(self):
        r = fetch(self.proxy, tls12("ECDHE-ECDSA-AES128-SHA"), "/owa/")
        self.assertEqual(r.status, 200, r)


class Hsts(ProxyTestCase):
    ROUTES = [
        {"prefix": "/owa", "client_cert": "require", "hsts": "max-age=31536000; includeSubDomains"},
        {"prefix": "/ecp", "client_cert": "require"},
    ]

    def headers(self, path):
        r = fetch(self.proxy, client_context("alice"), path)
        self.assertEqual(r.status, 200, r)
        head = r.raw.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
        return [tuple(h.split(": ", 1)) for h in head]

    def test_route_with_hsts_sends_it_once(self):
        hsts = [v for k, v in self.headers("/owa/") if k.lower() == "strict-transport-security"]
        self.assertEqual(hsts, ["max-age=31536000; includeSubDomains"])

    def test_route_without_hsts_sends_none(self):
        self.assertFalse([k for k, v in self.headers("/ecp/") if k.lower() == "strict-transport-security"])


def staple_of(port, ca):
    """The DER OCSP response the server staples, read from `openssl s_client -status -msg` (the
    TLS 1.2 CertificateStatus message), and s_client's text; None when nothing was stapled."""
    r = s_client(port, "-tls1_2", "-status", "-msg", ca=ca)
    out = r.stdout.decode(errors="replace")
    if "OCSP response: no response sent" in out or "OCSP Response Status" not in out:
        return None, out
    # The message dump after "<<< TLS 1.2, Handshake [length N], CertificateStatus": hex bytes
    # of the handshake message: type 22 (1), length (3), status_type 1 (1), length (3), DER.
    m = re.search(r"<<< TLS 1\.2, Handshake \[length [0-9a-f]+\], CertificateStatus\n((?:    [0-9a-f ]+\n)+)", out)
    if not m:
        raise AssertionError("no CertificateStatus message in s_client -msg output:\n" + out[-4000:])
    msg = bytes.fromhex("".join(m.group(1).split()))
    assert msg[0] == 22 and msg[4] == 1, msg[:8].hex()
    n = int.from_bytes(msg[5:8], "big")
    return msg[8:8 + n], out


class Stapling(unittest.TestCase):
    """tls.ocsp_stapling = "auto" (the default) against a PKI whose server certificate has an
    OCSP URL answered by a responder of this process (harness.RevocationPki)."""

    @classmethod
    def setUpClass(cls):
        if not (BIN and MOCK and PKI):
            raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-staple-")
        cls.rpki = RevocationPki(cls.tmp)
        cls.mock = Mock(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()
        cls.rpki.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def proxy(self, stapling=None, **tls):
        section = self.rpki.tls_section(stapling=stapling)
        section.update(tls)
        p = Proxy(self.tmp, [f"http://{self.mock.http}"], sections={"tls": section})
        self.addCleanup(p.stop)
        return p

    def ca(self):
        return self.rpki.path("ca", "root.pem")

    def wait_staple(self, p):
        wait_until(lambda: "good response from" in p.process.output(), timeout=30,
                   what="the first OCSP staple")

    def verify(self, der):
        """openssl ocsp checks the stapled response: signature, CertID of server.pem, status."""
        path = os.path.join(self.tmp, "staple.der")
        with open(path, "wb") as f:
            f.write(der)
        r = subprocess.run(["openssl", "ocsp", "-respin", path, "-issuer", self.rpki.path("ca", "issuing.pem"),
                            "-cert", self.rpki.path("server.pem"), "-CAfile", self.ca(), "-no_nonce"],
                           capture_output=True, timeout=30)
        out = (r.stdout + r.stderr).decode(errors="replace")
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("Response verify OK", out)
        self.assertRegex(out, r"server\.pem: good")

    def test_auto_staples_a_response_that_openssl_verifies(self):
        p = self.proxy()
        self.wait_staple(p)
        der, out = staple_of(p.port, self.ca())
        self.assertIsNotNone(der, out[-3000:])
        self.assertIn("OCSP Response Status: successful", out)
        self.assertIn("Cert Status: good", out)
        self.verify(der)
        # TLS 1.3 carries it in the Certificate message: s_client -status shows it too.
        out13 = s_client(p.port, "-tls1_3", "-status", ca=self.ca()).stdout.decode(errors="replace")
        self.assertIn("Cert Status: good", out13)

    def test_responder_down_keeps_the_last_good_response(self):
        # Answers valid for 2 minutes and retry_after 1 s: the proxy asks again every second
        # (refresh_ahead is longer than the validity), so a down responder is seen at once.
        self.rpki.ocsp.ndays, self.rpki.ocsp.nmin = None, 2
        self.addCleanup(setattr, self.rpki.ocsp, "ndays", 1)
        self.addCleanup(setattr, self.rpki.ocsp, "nmin", None)
        section = self.rpki.tls_section(stapling=None)
        p = Proxy(self.tmp, [f"http://{self.mock.http}"],
                  sections={"tls": section, "revocation": {"retry_after": "1s", "timeout": "2s"}})
        self.addCleanup(p.stop)
        self.wait_staple(p)
        self.rpki.ocsp.down()
        self.addCleanup(self.rpki.ocsp.up)
        wait_until(lambda: "keeping the last good response" in p.process.output(), timeout=30,
                   what="a failed refresh")
        der, out = staple_of(p.port, self.ca())
        self.assertIsNotNone(der, out[-2000:])
        self.verify(der)
        # A proxy started while the responder is down has nothing to staple, and staples as
        # soon as the responder is back (retry_after).
        q = Proxy(self.tmp, [f"http://{self.mock.http}"],
                  sections={"tls": section, "revocation": {"retry_after": "1s", "timeout": "2s"}})
        self.addCleanup(q.stop)
        wait_until(lambda: "no staple, retry in" in q.process.output(), timeout=30,
                   what="the failed first fetch")
        self.assertIsNone(staple_of(q.port, self.ca())[0])
        self.rpki.ocsp.up()
        wait_until(lambda: staple_of(q.port, self.ca())[0] is not None, timeout=60,
                   what="a staple after the responder came back")

    def test_off_staples_nothing(self):
        p = self.proxy(stapling="off")
        der, out = staple_of(p.port, self.ca())
        self.assertIsNone(der, out[-2000:])
        self.assertNotIn("ocsp stapling", p.process.output())

    def test_file_staples_the_given_response_and_refuses_a_bad_one(self):
        # Fetch a response with openssl ocsp from the test responder, then staple that file.
        resp = os.path.join(self.tmp, "server.ocsp.der")
        r = subprocess.run(["openssl", "ocsp", "-issuer", self.rpki.path("ca", "issuing.pem"),
                            "-cert", self.rpki.path("server.pem"), "-url", self.rpki.ocsp.url("/"),
                            "-respout", resp, "-noverify"], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        p = self.proxy(stapling="file", ocsp_response=resp)
        der, out = staple_of(p.port, self.ca())
        with open(resp, "rb") as f:
            self.assertEqual(der, f.read())
        self.verify(der)
        bad = os.path.join(self.tmp, "garbage.der")
        with open(bad, "wb") as f:
            f.write(b"\x30\x03\x0a\x01\x00")  # an OCSPResponse: status successful, no body
        section = self.rpki.tls_section(stapling="file")
        section["ocsp_response"] = bad
        with self.assertRaises(Exception):
            q = Proxy(self.tmp, [f"http://{self.mock.http}"], sections={"tls": section})
            q.stop()


if __name__ == "__main__":
    unittest.main()

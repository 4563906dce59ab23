"""--check-config reads every file the way start-up does (issue 13): certificates, keys, chains,
CRLs and client CAs in PEM and DER, PKCS#12 refused with the conversion command, a key that is
encrypted or does not match, the two swapped, a keytab that is not one or lacks the principal.
Each broken file: exit 2 and a message naming it. Warnings (no chain, expiring, stale CRL) do not
fail the check. Start-up refuses the same files with the same words and never asks for a
passphrase."""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import BIN, MOCK, PKI, Proxy

from test_lifecycle import write_config

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def run(*args, timeout=60):
    # stdin closed: a start-up that asks for a passphrase would read EOF (or hang: the timeout).
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, stdin=subprocess.DEVNULL)


def secret(path):
    """A file in a secret's place (key, keytab) must be readable by its owner only (issue 16)."""
    os.chmod(path, 0o600)
    return path


class CheckConfigFiles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (BIN and MOCK and PKI):
            raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-check-")

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def file(self, name):
        return os.path.join(self.tmp, name)

    def fails(self, sections, *needles):
        path = write_config(self.tmp, sections=sections)
        r = run("--check-config", path)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("test failed", r.stderr)
        self.assertNotIn("test is successful", r.stdout)
        for n in needles:
            self.assertIn(n, r.stderr)
        return path, r

    def passes(self, sections, *warnings):
        path = write_config(self.tmp, sections=sections)
        r = run("--check-config", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("test is successful", r.stdout)
        for w in warnings:
            self.assertIn(w, r.stderr)
        return r

    # --- server certificate and key -------------------------------------------------------------
    def test_the_good_configuration_has_no_warning(self):
        r = self.passes({})
        self.assertNotIn("warning", r.stderr)

    def test_pfx_is_refused_with_the_command_that_converts_it(self):
        pfx = self.file("server.pfx")
        openssl("pkcs12", "-export", "-in", os.path.join(PKI, "server-chain.pem"),
                "-inkey", os.path.join(PKI, "server.key"), "-out", pfx, "-passout", "pass:x")
        secret(pfx)
        _, r = self.fails({"tls": {"certificate": pfx}}, "tls.certificate", pfx, "PKCS#12",
                          f"openssl pkcs12 -in {pfx} -nokeys")
        # The same file as the key: refused as well, by its own key name.
        self.fails({"tls": {"private_key": pfx}}, "tls.private_key", pfx, "PKCS#12")

    def test_swapped_key_and_certificate(self):
        chain = self.file("chain-as-key.pem")
        shutil.copy(os.path.join(PKI, "server-chain.pem"), chain)
        secret(chain)
        _, r = self.fails({"tls": {"certificate": os.path.join(PKI, "server.key"), "private_key": chain}},
                          "holds a private key, not a certificate",
                          "holds a certificate, not a private key")
        self.assertIn("tls.certificate: " + os.path.join(PKI, "server.key"), r.stderr)
        self.assertIn("tls.private_key: " + chain, r.stderr)

    def test_encrypted_key_is_refused_and_start_up_never_prompts(self):
        enc = self.file("encrypted.key")
        openssl("pkey", "-in", os.path.join(PKI, "server.key"), "-aes256", "-passout", "pass:secret",
                "-out", enc)
        secret(enc)
        path, _ = self.fails({"tls": {"private_key": enc}}, "tls.private_key", enc, "is encrypted",
                             "openssl pkey -in " + enc)
        r = run("-c", path, timeout=30)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn(enc, r.stderr)
        self.assertIn("is encrypted", r.stderr)

    def test_key_of_another_certificate(self):
        key = os.path.join(PKI, "clients", "bob.key")
        self.fails({"tls": {"private_key": key}}, "tls.private_key", key, "does not match the certificate")

    def test_garbage_certificate(self):
        bad = self.file("garbage.pem")
        with open(bad, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
        self.fails({"tls": {"certificate": bad}}, "tls.certificate", bad, "malformed PEM certificate")

    def test_der_certificate_and_key_load_and_a_missing_chain_is_a_warning(self):
        cert, key = self.file("server.der"), self.file("server-key.der")
        openssl("x509", "-in", os.path.join(PKI, "server.pem"), "-outform", "DER", "-out", cert)
        openssl("pkey", "-in", os.path.join(PKI, "server.key"), "-outform", "DER", "-out", key)
        secret(key)
        self.passes({"tls": {"certificate": cert, "private_key": key}},
                    "warning: tls.certificate: " + cert, "without its chain")
        # Start-up reads DER too: the same files run, and the warning is logged.
        p = Proxy(self.tmp, ["http://127.0.0.1:9"], sections={"tls": {"certificate": cert, "private_key": key}})
        try:
            self.assertIn("without its chain", p.process.output())
        finally:
            self.assertEqual(p.stop(), 0)

    def test_server_certificate_expiring_within_30_days_is_a_warning(self):
        cert, key = self.file("soon.pem"), self.file("soon.key")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-out", cert, "-days", "10", "-subj", "/CN=mail.example.test")
        secret(key)
        r = self.passes({"tls": {"certificate": cert, "private_key": key}}, "CN=mail.example.test")
        self.assertRegex(r.stderr, r"warning: tls\.certificate: .*soon\.pem: certificate CN=mail\.example\.test "
                                   r"expires in (9|10) days")
        self.assertNotIn("without its chain", r.stderr)  # self-signed: nothing to append

    # --- client CAs, intermediates, CRLs ----------------------------------------------------------
    def test_private_key_given_as_client_ca(self):
        key = os.path.join(PKI, "server.key")
        self.fails({"tls": {"client_ca": key}}, "tls.client_ca: " + key,
                   "holds a private key, not a certificate")

    def test_der_client_ca_is_accepted(self):
        roots = self.file("roots.der")
        openssl("x509", "-in", os.path.join(PKI, "client-roots.pem"), "-outform", "DER", "-out", roots)
        self.passes({"tls": {"client_ca": roots}})

    def test_garbage_intermediates(self):
        bad = self.file("intermediates.bin")
        with open(bad, "wb") as f:
            f.write(b"\x00\x01garbage")
        self.fails({"tls": {"client_intermediates": bad}}, "tls.client_intermediates", bad,
                   "neither a PEM nor a DER certificate")

    def test_certificate_given_as_crl(self):
        cert = os.path.join(PKI, "server.pem")
        self.fails({"tls": {"crl": [cert]}}, "tls.crl[0]: " + cert, "holds a certificate, not a CRL")

    def test_der_crl_is_accepted(self):
        self.passes({"tls": {"crl": [os.path.join(PKI, "crl", "issuing.crl.der"),
                                     os.path.join(PKI, "crl", "root.crl.pem")]}})

    def test_stale_crl_is_a_warning_naming_it(self):
        pki = self.file("stale-pki")
        shutil.copytree(PKI, pki)
        subprocess.run([os.path.join(REPO, "certs-dev", "revoke"), "--next-update", "-1 hour",
                        "--last-update", "-2 days", "--crl", "issuing", pki],
                       check=True, capture_output=True)
        crl = os.path.join(pki, "crl", "issuing.crl.pem")
        self.passes({"tls": {"crl": [crl, os.path.join(pki, "crl", "root.crl.pem")]}},
                    "tls.crl[0]: " + crl, "is STALE", "revocation status unknown")

    # --- Kerberos keytab --------------------------------------------------------------------------
    def kerberos(self, keytab, principal="HTTP/cbagate.example.test@EXAMPLE.TEST"):
        return {"identity": {"mode": "kerberos"},
                "kerberos": {"keytab": keytab, "principal": principal,
                             "target_spn": "HTTP/exchange.example.test"}}

    def test_a_keytab_that_is_not_a_keytab(self):
        bad = self.file("not-a.keytab")
        with open(bad, "w") as f:
            f.write("this is a password, not a keytab\n")
        secret(bad)
        path, _ = self.fails(self.kerberos(bad), bad, "is not a usable keytab")
        r = run("-c", path, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("is not a usable keytab", r.stderr)

    def test_a_keytab_without_the_principal(self):
        if shutil.which("ktutil") is None:
            self.skipTest("ktutil (krb5-user) is not installed")
        kt = self.file("other.keytab")
        script = ("addent -password -p HTTP/other.example.test@EXAMPLE.TEST -k 1 -e aes256-cts-hmac-sha1-96\n"
                  "secret\nwkt " + kt + "\nquit\n")
        subprocess.run(["ktutil"], input=script, text=True, check=True, capture_output=True)
        secret(kt)
        _, r = self.fails(self.kerberos(kt), f"keytab {kt} has no key for HTTP/cbagate.example.test@EXAMPLE.TEST",
                          "it holds: HTTP/other.example.test@EXAMPLE.TEST")


if __name__ == "__main__":
    unittest.main()

"""Trust limits without a directory (issue 12): auth.issuing_cas (a second issuing CA under the
same root is refused), auth.upn_suffixes, auth.certificate_templates, each a 403.12 with its
own code that never reaches the backend; and --check-config on an issuing CA put in
tls.client_ca."""
import os
import subprocess
import unittest

import harness
from harness import PKI, ProxyTestCase, request


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(workdir, name):
    """A second issuing CA signed by the dev root."""
    prefix = os.path.join(workdir, name)
    with open(prefix + ".cnf", "w") as f:
        f.write("[v3]\nbasicConstraints = critical,CA:TRUE,pathlen:0\n"
                "keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", prefix + ".key", "-subj", f"/CN={name}", "-out", prefix + ".csr")
    openssl("x509", "-req", "-in", prefix + ".csr", "-CA", os.path.join(PKI, "ca", "root.pem"),
            "-CAkey", os.path.join(PKI, "ca", "root.key"), "-set_serial", "0x" + os.urandom(8).hex(),
            "-days", "30", "-extfile", prefix + ".cnf", "-extensions", "v3", "-out", prefix + ".pem")
    return prefix


def make_leaf(workdir, name, upn, ca_prefix, template_name=None):
    """A client certificate; `name`-chain.pem holds key, leaf and its CA (harness.Client)."""
    prefix = os.path.join(workdir, name)
    ext = ["[v3]", "basicConstraints = critical,CA:FALSE", "keyUsage = critical,digitalSignature",
           "extendedKeyUsage = clientAuth", "subjectAltName = @alt"]
    if template_name:
        # szOID_ENROLL_CERTTYPE_EXTENSION: the v1 template name as a BMPString.
        ext.append(f"1.3.6.1.4.1.311.20.2 = ASN1:BMPSTRING:{template_name}")
    ext += ["[alt]", f"otherName.1 = 1.3.6.1.4.1.311.20.2.3;UTF8:{upn}"]
    with open(prefix + ".cnf", "w") as f:
        f.write("\n".join(ext) + "\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", prefix + ".key", "-subj", f"/CN={name}", "-out", prefix + ".csr")
    openssl("x509", "-req", "-in", prefix + ".csr", "-CA", ca_prefix + ".pem", "-CAkey",
            ca_prefix + ".key", "-set_serial", "0x" + os.urandom(8).hex(), "-days", "30",
            "-extfile", prefix + ".cnf", "-extensions", "v3", "-out", prefix + ".pem")
    with open(prefix + "-chain.pem", "w") as out:
        for part in (prefix + ".key", prefix + ".pem", ca_prefix + ".pem"):
            with open(part) as f:
                out.write(f.read())
    return prefix


class TrustLimits(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.certs = tempfile.mkdtemp(prefix="cbagate-limits-")
        issuing = os.path.join(PKI, "ca", "issuing")
        cls.other_ca = make_ca(cls.certs, "Devices Issuing CA")
        cls.admin = make_leaf(cls.certs, "admin", "Administrator@lab.test", cls.other_ca)
        cls.fabrikam = make_leaf(cls.certs, "ceo", "ceo@fabrikam.com", issuing)
        cls.templated = make_leaf(cls.certs, "templated", "tina@lab.test", issuing, "User")
        cls.PROXY_SECTIONS = {
            "tls": {"client_intermediates": os.path.join(PKI, "client-intermediates.pem"),
                    "crl": []},
            "auth": {"issuing_cas": os.path.join(PKI, "ca", "issuing.pem"),
                     "upn_suffixes": ["lab.test"]},
            "revocation": {"mode": "off"},
        }
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shutil
        shutil.rmtree(cls.certs, ignore_errors=True)

    def refused(self, cert, code):
        marker = self.mark()
        r = request(self.proxy, "GET", f"/owa/?{marker}", cert=cert)
        self.assertEqual(r.status, 403, r)
        self.assertTrue(r.body.startswith(b"403.12 Forbidden"), r.body)
        rec = self.proxy_logged(marker)
        self.assertEqual(rec.get("error"), code)
        self.assertEqual(rec.get("substatus"), 12)
        self.assertNotForwarded(marker)

    def test_issuing_ca_allowed(self):
        r = request(self.proxy, "GET", "/owa/", cert="alice")
        self.assertEqual(r.status, 200, r)

    def test_second_issuing_ca_under_the_same_root_is_refused(self):
        self.refused(self.admin, "issuer_not_allowed")

    def test_upn_outside_the_suffixes_is_refused(self):
        self.refused(self.fabrikam, "upn_suffix_not_allowed")


class TemplateLimit(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.certs = tempfile.mkdtemp(prefix="cbagate-tmpl-")
        issuing = os.path.join(PKI, "ca", "issuing")
        cls.templated = make_leaf(cls.certs, "templated", "tina@lab.test", issuing, "User")
        cls.PROXY_SECTIONS = {"tls": {"crl": []}, "revocation": {"mode": "off"},
                              "auth": {"certificate_templates": ["user"]}}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shutil
        shutil.rmtree(cls.certs, ignore_errors=True)

    def test_template_listed_is_accepted_others_refused(self):
        r = request(self.proxy, "GET", "/owa/", cert=self.templated)
        self.assertEqual(r.status, 200, r)
        marker = self.mark()
        r = request(self.proxy, "GET", f"/owa/?{marker}", cert="alice")  # no template extension
        self.assertEqual(r.status, 403)
        self.assertTrue(r.body.startswith(b"403.12"), r.body)
        self.assertEqual(self.proxy_logged(marker).get("error"), "template_not_allowed")
        self.assertNotForwarded(marker)


class CheckConfig(unittest.TestCase):
    def config(self, tmp, client_ca, issuing=None):
        path = os.path.join(tmp, "c.toml")
        auth = f'[auth]\nissuing_cas = "{issuing}"\n' if issuing else ""
        with open(path, "w") as f:
            f.write(f"""[server]
listen = ["127.0.0.1:0"]
[tls]
certificate = "{PKI}/server-chain.pem"
private_key = "{PKI}/server.key"
client_ca = "{client_ca}"
{auth}[upstream]
servers = ["http://127.0.0.1:9"]
[[route]]
prefix = "/owa"
""")
        return path

    def run_check(self, path):
        return subprocess.run([harness.BIN, "--check-config", path], capture_output=True,
                              text=True, timeout=60)

    def test_issuing_ca_as_client_ca_is_reported_with_where_it_belongs(self):
        import tempfile
        tmp = tempfile.mkdtemp(prefix="cbagate-cc-")
        r = self.run_check(self.config(tmp, os.path.join(PKI, "ca", "issuing.pem")))
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("is not self-signed", r.stderr)
        self.assertIn("cbagate Lab Issuing CA", r.stderr)
        self.assertIn("tls.client_intermediates", r.stderr)
        self.assertIn("auth.issuing_cas", r.stderr)
        # Root and issuing CA in one bundle: works, but the issuing CA is flagged.
        bundle = os.path.join(tmp, "bundle.pem")
        with open(bundle, "w") as out:
            for p in ("root.pem", "issuing.pem"):
                with open(os.path.join(PKI, "ca", p)) as f:
                    out.write(f.read())
        r = self.run_check(self.config(tmp, bundle))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("warning: tls.client_ca: certificate 2", r.stderr)
        # The recommended layout: nothing to say.
        r = self.run_check(self.config(tmp, os.path.join(PKI, "client-roots.pem"),
                                       os.path.join(PKI, "ca", "issuing.pem")))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("tls.client_ca", r.stderr)


if __name__ == "__main__":
    unittest.main()

"""Kerberos mode with directory mapping (issue 12, step 5): S4U2Self names the account the
directory returned (sAMAccountName in the proxy's realm), not a name guessed from the UPN's
suffix. The certificate's UPN alice.smith@corp.example is no principal of the realm; the
directory maps it to the account alice, and the backend sees alice@LAB.TEST."""
import os
import shutil
import tempfile
import unittest

from harness import PKI, Mock, Proxy, ROUTES_DEFAULT, request, wait_until
from directory_lab import DirectoryLab, Slapd, password_file, SVC_DN, BASE_DN

KDC_DIR = os.environ.get("CBAGATE_KDC_DIR", "")


def kdc_env():
    env = {}
    with open(os.path.join(KDC_DIR, "env.sh")) as f:
        for line in f:
            if line.startswith("export ") and "=" in line:
                k, v = line.strip()[len("export "):].split("=", 1)
                env[k] = v
    return env


class KerberosDirectory(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(os.path.join(KDC_DIR, "env.sh")):
            raise unittest.SkipTest("needs the kdc fixture")
        cls.env = kdc_env()
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-krbdir-")
        cls.lab = DirectoryLab(cls.tmp, PKI)
        smith = cls.lab.issue("smith", "alice.smith@corp.example")
        # The directory's alice (sAMAccountName alice) has the certificate's UPN and a strong
        # mapping for it, in place of the lab's alice@lab.test.
        cls.lab.entries = [e for e in cls.lab.entries if e["name"] != "alice"]
        cls.lab.add_account("alice", "alice.smith@corp.example", alt=[smith["ski"]])
        cls.ldap = Slapd(cls.tmp, "slapd", [cls.lab.users_ldif()])
        os.environ["KRB5_CONFIG"] = cls.env["KRB5_CONFIG"]  # the mock's acceptor reads it
        cls.mock = Mock(cls.tmp, tls=True, heartbeat_cap=1, extra_args=(
            "--negotiate-keytab", cls.env["KCD_BACKEND_KEYTAB"], "--require-negotiate",
            "--channel-bindings", "require"))
        try:
            cls.proxy = Proxy(cls.tmp, [f"https://{cls.mock.https}"], routes=ROUTES_DEFAULT, sections={
                "identity": {"mode": "kerberos"},
                "tls": {"crl": []},
                "revocation": {"mode": "off"},
                "auth": {"mapping": "directory"},
                "kerberos": {"keytab": cls.env["KCD_PROXY_KEYTAB"],
                             "principal": cls.env["KCD_PROXY_PRINCIPAL"],
                             "target_spn": "HTTP/exchange.lab.test", "upn_to_principal": "realm",
                             "krb5_config": cls.env["KRB5_CONFIG"]},
                "directory": {"uris": [cls.ldap.uri], "base_dn": BASE_DN, "bind": "simple",
                              "bind_dn": SVC_DN, "password_file": password_file(cls.tmp),
                              "tls": "none"},
            })
        except BaseException:
            cls.mock.stop()
            cls.ldap.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        cls.mock.stop()
        cls.ldap.stop()
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def saw(self, marker):
        return wait_until(lambda: [r for r in self.mock.requests() if marker in (r.get("target") or "")],
                          timeout=10, what=f"backend record {marker}")

    def test_s4u2self_names_the_directory_account(self):
        r = request(self.proxy, "GET", "/owa/?marker=krbdir1", cert=self.lab.users["smith"]["cert"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.saw("krbdir1")[0]["negotiate_principal"], "alice@LAB.TEST")

    def test_refused_mapping_never_reaches_the_kdc_or_backend(self):
        r = request(self.proxy, "GET", "/owa/?marker=krbdir2", cert=self.lab.users["carol"]["cert"])
        self.assertEqual(r.status, 403)
        self.assertIn(b"(cbagate: disabled)", r.body)


if __name__ == "__main__":
    unittest.main()

"""Directory mapping (issue 12) with a SASL GSSAPI bind: the proxy authenticates to the
directory with its keytab (no kinit) against the test KDC of tests/support/kdc; slapd accepts
ldap/127.0.0.1@LAB.TEST and maps the proxy's principal to the read-only service account."""
import os
import shutil
import subprocess
import tempfile
import unittest

import harness
from directory_lab import DirectoryLab, Slapd, SVC_DN, BASE_DN

BIN, PKI = harness.BIN, harness.PKI
KDC = os.environ.get("CBAGATE_KDC_DIR", "")


def kdc_env():
    env = {}
    with open(os.path.join(KDC, "env.sh")) as f:
        for line in f:
            if line.startswith("export "):
                k, v = line[7:].strip().split("=", 1)
                env[k] = v
    return env


class GssapiBind(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (BIN and PKI and KDC and os.path.exists(os.path.join(KDC, "env.sh"))):
            raise unittest.SkipTest("needs CBAGATE_BIN, CBAGATE_TEST_PKI and the kdc fixture")
        cls.env = kdc_env()
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-gssapi-")
        cls.lab = DirectoryLab(cls.tmp, PKI)
        realm = cls.env["KCD_REALM"]
        proxy = cls.env["KCD_PROXY_PRINCIPAL"].split("@")[0].lower()
        cls.ldap = Slapd(cls.tmp, "slapd", [cls.lab.users_ldif()],
                         sasl={"host": "127.0.0.1",
                               "map": f'"^uid={proxy},cn={realm.lower()},cn=gssapi,cn=auth$" "{SVC_DN}"'},
                         env={"KRB5_KTNAME": cls.env["KCD_LDAP_KEYTAB"],
                              "KRB5_CONFIG": cls.env["KRB5_CONFIG"]})
        cls.config = os.path.join(cls.tmp, "gssapi.toml")
        with open(cls.config, "w") as f:
            f.write(f"""[server]
listen = ["127.0.0.1:0"]
[tls]
certificate = "{PKI}/server-chain.pem"
private_key = "{PKI}/server.key"
client_ca = "{PKI}/client-roots.pem"
client_intermediates = "{PKI}/client-intermediates.pem"
[auth]
mapping = "directory"
[kerberos]
krb5_config = "{cls.env['KRB5_CONFIG']}"
[directory]
uris = ["{cls.ldap.uri}"]
base_dn = "{BASE_DN}"
bind = "sasl_gssapi"
keytab = "{cls.env['KCD_PROXY_KEYTAB']}"
tls = "none"
timeout = "5s"
[upstream]
servers = ["http://127.0.0.1:9"]
[[route]]
prefix = "/owa"
""")

    @classmethod
    def tearDownClass(cls):
        cls.ldap.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def explain(self, name):
        env = {k: v for k, v in os.environ.items() if k not in ("KRB5CCNAME", "KRB5_CLIENT_KTNAME")}
        return subprocess.run([BIN, "--explain-certificate", self.lab.users[name]["cert"] + ".pem",
                               "--config", self.config], capture_output=True, text=True,
                              timeout=120, env=env)

    def test_gssapi_bind_maps_alice(self):
        r = self.explain("alice")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("directory    allowed", r.stdout)

    def test_gssapi_bind_refuses_carol(self):
        r = self.explain("carol")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("directory    disabled", r.stdout)


if __name__ == "__main__":
    unittest.main()

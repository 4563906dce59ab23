"""Directory mapping (issue 12) through `cbagate --explain-certificate CERT --config FILE`:
every verdict against a real slapd on loopback, the injection UPN, two accounts with one UPN,
failover to the second URI, the directory down, NTAuth refusal. Label: integration;directory.
"""
import os
import shutil
import subprocess
import tempfile
import unittest

import harness
from directory_lab import DirectoryLab, Slapd, password_file, SVC_DN, BASE_DN

BIN, PKI = harness.BIN, harness.PKI


def write_config(path, uris, extra_directory="", auth_extra=""):
    with open(path, "w") as f:
        f.write(f"""
[server]
listen = ["127.0.0.1:0"]
[tls]
certificate = "{PKI}/server-chain.pem"
private_key = "{PKI}/server.key"
client_ca = "{PKI}/client-roots.pem"
client_intermediates = "{PKI}/client-intermediates.pem"
[auth]
mapping = "directory"
{auth_extra}
[directory]
uris = {harness.toml_value(uris)}
base_dn = "{BASE_DN}"
bind = "simple"
bind_dn = "{SVC_DN}"
password_file = "{os.path.join(os.path.dirname(path), 'directory-password')}"
tls = "none"
timeout = "3s"
{extra_directory}
[upstream]
servers = ["http://127.0.0.1:9"]
[[route]]
prefix = "/owa"
""")


def explain(cert_prefix, config):
    r = subprocess.run([BIN, "--explain-certificate", cert_prefix + ".pem", "--config", config],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def directory_line(out):
    for line in out.splitlines():
        if line.startswith("directory "):
            return line.split(None, 1)[1]
    return ""


class ExplainTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (BIN and PKI):
            raise unittest.SkipTest("CBAGATE_BIN and CBAGATE_TEST_PKI must be set")
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-dir-")
        cls.lab = DirectoryLab(cls.tmp, PKI)
        cls.ldap = Slapd(cls.tmp, "slapd", [cls.lab.users_ldif(),
                                            cls.lab.ntauth_ldif([cls.lab.issuing_der])])
        password_file(cls.tmp)
        cls.config = os.path.join(cls.tmp, "cbagate.toml")
        write_config(cls.config, [cls.ldap.uri])

    @classmethod
    def tearDownClass(cls):
        cls.ldap.stop()
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_every_verdict(self):
        for name, expected in self.lab.expect.items():
            with self.subTest(name=name):
                rc, out, err = explain(self.lab.users[name]["cert"], self.config)
                line = directory_line(out)
                self.assertTrue(line.startswith(expected), f"{name}: {line!r}\n{out}\n{err}")
                self.assertEqual(rc, 0 if expected == "allowed" else 1, out + err)
                if expected not in ("allowed",):
                    self.assertIn("(403.12)", line)

    def test_strong_strings_printed_match_what_ad_would_hold(self):
        # The strings an administrator pastes into AD are the ones computed independently here
        # from the openssl CLI (serial bytes reversed, AD DN order).
        for name in ("alice", "gary", "fiona", "eve"):
            rc, out, _ = explain(self.lab.users[name]["cert"], self.config)
            facts = self.lab.users[name]["facts"]
            for key in ("sr", "ski", "sha1"):
                self.assertIn("  " + facts[key] + "\n", out, f"{name} {key}")
        rc, out, _ = explain(self.lab.users["alice"]["cert"], self.config)
        self.assertIn("<SR>1200000000AC11000000002B", out)  # Microsoft's byte order
        rc, out, _ = explain(self.lab.users["bob"]["cert"], self.config)
        self.assertIn("SID extension S-1-5-21-1004336348-1177238915-682003330-1104", out)

    def test_injection_upn_matches_nothing(self):
        rc, out, _ = explain(self.lab.users["inject"]["cert"], self.config)
        self.assertTrue(directory_line(out).startswith("not_found"), out)

    def test_allowed_names_the_account_and_the_binding(self):
        rc, out, _ = explain(self.lab.users["fiona"]["cert"], self.config)
        self.assertEqual(rc, 0, out)
        self.assertIn("cn=fiona,cn=users,dc=lab,dc=test", out.lower())
        self.assertIn("bound by   X509:<SKI>", out)

    def test_failover_to_the_second_uri(self):
        config = os.path.join(self.tmp, "failover.toml")
        write_config(config, [f"ldap://127.0.0.1:{harness.dead_port()}", self.ldap.uri])
        rc, out, err = explain(self.lab.users["alice"]["cert"], config)
        self.assertEqual(rc, 0, out + err)
        self.assertTrue(directory_line(out).startswith("allowed"), out)

    def test_directory_down_is_unavailable_not_a_pass(self):
        config = os.path.join(self.tmp, "down.toml")
        write_config(config, [f"ldap://127.0.0.1:{harness.dead_port()}",
                              f"ldap://127.0.0.1:{harness.dead_port()}"])
        rc, out, err = explain(self.lab.users["alice"]["cert"], config)
        self.assertEqual(rc, 1, out + err)
        self.assertTrue(directory_line(out).startswith("unavailable (503)"), out)

    def test_ntauth_refuses_a_chain_valid_certificate_of_another_ca(self):
        config = os.path.join(self.tmp, "ntauth.toml")
        write_config(config, [self.ldap.uri], extra_directory="ntauth = true")
        rc, out, _ = explain(self.lab.users["rooted"]["cert"], config)
        self.assertTrue(directory_line(out).startswith("issuer_not_in_ntauth"), out)
        self.assertEqual(rc, 1)
        rc, out, _ = explain(self.lab.users["alice"]["cert"], config)
        self.assertTrue(directory_line(out).startswith("allowed"), out)

    def test_without_config_prints_the_strings_only(self):
        r = subprocess.run([BIN, "--explain-certificate", self.lab.users["alice"]["cert"] + ".pem"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("not checked", r.stdout)
        self.assertIn(self.lab.users["alice"]["facts"]["sr"], r.stdout)
        self.assertNotIn("directory ", r.stdout)


if __name__ == "__main__":
    unittest.main()

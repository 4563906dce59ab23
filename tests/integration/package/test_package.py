"""The Debian package and the systemd unit.

- `cpack -G DEB` makes cbagate_<version>_<arch>.deb; unpacked with `dpkg -x` into a scratch root
  it holds the binary (which runs), the unit, /etc/cbagate/cbagate.toml declared as a conffile,
  and the docs; the maintainer scripts create the service user.
- lintian reports no error on it.
- `systemd-analyze verify` accepts config/systemd/cbagate.service (with the packaged binary's
  path) without a single complaint, and the unit has what the service needs: Type=notify,
  ExecReload, LimitNOFILE and the sandboxing.
"""
import os
import shutil
import subprocess
import tempfile
import unittest

BUILD = os.environ["CBAGATE_BUILD_DIR"]
SOURCE = os.environ["CBAGATE_SOURCE_DIR"]
UNIT = os.path.join(SOURCE, "config", "systemd", "cbagate.service")


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)


class Package(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("cpack") is None or shutil.which("dpkg-deb") is None:
            raise unittest.SkipTest("cpack or dpkg-deb not installed")
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-pkg-")
        out = run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD, "CPackConfig.cmake"),
                   "-B", cls.tmp], cwd=BUILD)
        if out.returncode != 0:
            raise AssertionError("cpack failed:\n" + out.stdout + out.stderr)
        debs = [f for f in os.listdir(cls.tmp) if f.endswith(".deb")]
        assert len(debs) == 1, debs
        cls.deb = os.path.join(cls.tmp, debs[0])
        cls.root = os.path.join(cls.tmp, "root")
        out = run(["dpkg", "-x", cls.deb, cls.root])
        assert out.returncode == 0, out.stderr
        cls.control = os.path.join(cls.tmp, "control")
        out = run(["dpkg-deb", "-e", cls.deb, cls.control])
        assert out.returncode == 0, out.stderr

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, rel):
        return os.path.join(self.root, rel)

    def test_file_name_and_control_fields(self):
        self.assertRegex(os.path.basename(self.deb), r"^cbagate_\d+\.\d+\.\d+_[a-z0-9]+\.deb$")
        with open(os.path.join(self.control, "control")) as f:
            control = f.read()
        self.assertIn("Package: cbagate\n", control)
        self.assertIn("Section: net\n", control)
        self.assertRegex(control, r"Depends: .*libssl3")  # from dpkg-shlibdeps
        if os.environ.get("CBAGATE_MIMALLOC") == "ON":  # cmake/Allocator.cmake
            self.assertRegex(control, r"Depends: .*libmimalloc2\.0 \(>= 2\.0")
        self.assertRegex(control, r"Depends: .*adduser")

    def test_the_binary_is_installed_stripped_and_runs(self):
        binary = self.path("usr/bin/cbagate")
        self.assertTrue(os.access(binary, os.X_OK))
        out = run([binary, "--version"])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"^cbagate \d+\.\d+\.\d+")
        out = run(["file", binary]) if shutil.which("file") else None
        if out is not None:
            self.assertIn("stripped", out.stdout)
            self.assertNotIn("not stripped", out.stdout)

    def test_unit_config_conffile_and_docs(self):
        for rel in ("lib/systemd/system/cbagate.service", "etc/cbagate/cbagate.toml",
                    "usr/share/doc/cbagate/README.md", "usr/share/doc/cbagate/copyright",
                    "usr/share/doc/cbagate/changelog.Debian.gz"):
            self.assertTrue(os.path.isfile(self.path(rel)), rel)
        with open(self.path("lib/systemd/system/cbagate.service")) as f, open(UNIT) as g:
            self.assertEqual(f.read(), g.read())
        with open(self.path("etc/cbagate/cbagate.toml")) as f, \
                open(os.path.join(SOURCE, "config", "cbagate.toml")) as g:
            self.assertEqual(f.read(), g.read())
        with open(os.path.join(self.control, "conffiles")) as f:
            self.assertEqual(f.read().split(), ["/etc/cbagate/cbagate.toml"])
        with open(os.path.join(self.control, "postinst")) as f:
            self.assertIn("adduser --system --group", f.read())
        # The packaged configuration is the reference one: it parses (only the certificate files
        # it names are missing in a scratch root).
        out = run([self.path("usr/bin/cbagate"), "--check-config", self.path("etc/cbagate/cbagate.toml")])
        self.assertEqual(out.returncode, 2)
        self.assertIn("tls.certificate", out.stdout + out.stderr)
        self.assertNotIn("unknown key", out.stdout + out.stderr)

    def test_lintian_reports_no_error(self):
        if shutil.which("lintian") is None:
            self.skipTest("lintian not installed (tests/support/install-deps test)")
        out = run(["lintian", "--no-tag-display-limit", self.deb])
        errors = [line for line in out.stdout.splitlines() if line.startswith("E:")]
        print("lintian:\n" + out.stdout)
        self.assertEqual(errors, [], out.stdout + out.stderr)


class Unit(unittest.TestCase):
    def read(self):
        with open(UNIT) as f:
            return f.read()

    def test_systemd_analyze_verify_is_silent(self):
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze not installed")
        tmp = tempfile.mkdtemp(prefix="cbagate-unit-")
        try:
            unit = os.path.join(tmp, "cbagate.service")
            with open(unit, "w") as f:
                f.write(self.read().replace("/usr/bin/cbagate", os.environ["CBAGATE_BIN"]))
            out = run(["systemd-analyze", "verify", unit])
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            self.assertEqual((out.stdout + out.stderr).strip(), "")
            # The check notices a broken unit (it would not pass anything).
            with open(unit, "a") as f:
                f.write("\n[Service]\nNoSuchSetting=1\n")
            out = run(["systemd-analyze", "verify", unit])
            self.assertIn("NoSuchSetting", out.stdout + out.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_the_unit_is_a_notify_service_sandboxed(self):
        text = self.read()
        for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "LimitNOFILE=1048576",
                     "User=cbagate", "ProtectSystem=strict", "NoNewPrivileges=yes",
                     "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                     "AmbientCapabilities=CAP_NET_BIND_SERVICE", "PrivateTmp=yes",
                     "SystemCallFilter=@system-service"):
            self.assertIn("\n" + line + "\n", text, line)


if __name__ == "__main__":
    unittest.main()

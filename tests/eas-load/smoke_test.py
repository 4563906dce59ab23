"""eas-load end to end: 50 bulk users (certs-dev/make-pki --users 50 in a temp dir), the mock
Exchange behind cbagate, then eas-load's ping and storm scenarios against cbagate.

Environment (set by tests/eas-load/CMakeLists.txt): CBAGATE_BIN, MOCK_EXCHANGE_BIN, EAS_LOAD_BIN,
CBAGATE_SOURCE_DIR, PYTHONPATH=tests/integration (for harness.py). Every process is ours, stopped
by PID; every wait is bounded.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import harness

EAS_LOAD = os.environ.get("EAS_LOAD_BIN", "")
SOURCE = os.environ.get("CBAGATE_SOURCE_DIR",
                        os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
DEVICES = 50
# The ping run lasts --duration whatever happens, and every device must do its FolderSync and a
# Ping within it. 3 s is ample in a plain build (50 handshakes take about 0.1 s). Under
# ThreadSanitizer (tests/run --tsan) cbagate, the mock and eas-load all run instrumented, 5-15
# times slower: alone, the 50 handshakes took 0.5-1 s and FolderSync 0.3-0.7 s; with two busy
# cores beside it, 41 of 50 devices got through FolderSync and none to Ping in 3 s (in a full
# `tests/run --tsan`, none did FolderSync). The time is scaled there; the assertions are not.
PING_SECONDS = 20 if harness.tsan_build() else 3


class EasLoadSmoke(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (harness.BIN and harness.MOCK and EAS_LOAD):
            raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and EAS_LOAD_BIN must be set")
        cls.tmp = tempfile.mkdtemp(prefix="eas-load-")
        cls.pki = os.path.join(cls.tmp, "pki")
        subprocess.run([os.path.join(SOURCE, "certs-dev", "make-pki"), "--users", str(DEVICES),
                        cls.pki], check=True, timeout=240, stdout=subprocess.DEVNULL)
        harness.PKI = cls.pki  # the harness's config and mock read their files from here
        cls.mock = harness.Mock(cls.tmp, heartbeat_cap=1)
        try:
            cls.proxy = harness.Proxy(cls.tmp, [f"http://{cls.mock.http}"])
        except BaseException:
            cls.mock.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        for p in ("proxy", "mock"):
            if hasattr(cls, p):
                getattr(cls, p).stop()
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_load(self, *args):
        cmd = [EAS_LOAD, "--target", f"https://127.0.0.1:{self.proxy.port}", "--pki", self.pki,
               "--devices", str(DEVICES), "--json", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        try:
            report = json.loads(done.stdout)
        except json.JSONDecodeError:
            self.fail(f"no JSON report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.returncode, report, done.stderr

    def test_ping_every_device_syncs_and_pings_with_its_own_identity(self):
        rc, report, stderr = self.run_load("--scenario", "ping", "--heartbeat", "1",
                                           "--duration", str(PING_SECONDS))
        self.assertEqual(report["error_count"], 0, report["errors"])
        self.assertEqual(rc, 0, stderr)
        self.assertIn("connected", stderr)  # the progress line
        devices = report["device_summary"]
        # Short of it, the report says where the devices were (handshakes, abandoned requests).
        self.assertEqual(devices["with_foldersync"], DEVICES, report)
        self.assertEqual(devices["with_ping"], DEVICES, report)
        self.assertGreaterEqual(report["commands"]["FolderSync"]["ok"], DEVICES)
        self.assertGreaterEqual(report["commands"]["Ping"]["ok"], DEVICES)
        self.assertGreater(report["commands"]["Ping"]["p50_ms"], 0)

        eas = [r for r in self.mock.requests() if r.get("eas")]
        pairs = {(r["identity"], r["eas"]["device_id"]) for r in eas
                 if r["eas"]["cmd"] in ("FolderSync", "Ping")}
        identities = {i for i, _ in pairs}
        device_ids = {d for _, d in pairs}
        self.assertEqual(identities, {f"user{i:05d}@lab.test" for i in range(1, DEVICES + 1)})
        self.assertEqual(len(device_ids), DEVICES)
        self.assertEqual(len(pairs), DEVICES, "each identity keeps one DeviceId")
        for r in eas:  # the User parameter names the certificate's user
            self.assertEqual(r["eas"]["user"], r["identity"])

    def test_storm_counts_one_full_handshake_per_device(self):
        rc, report, stderr = self.run_load("--scenario", "storm", "--duration", "60")
        self.assertEqual(report["error_count"], 0, report["errors"])
        self.assertEqual(rc, 0, stderr)
        hs = report["handshakes"]
        self.assertEqual(hs["full"], DEVICES)
        self.assertEqual(hs["failed"], 0)
        self.assertGreater(hs["per_s"], 0)
        self.assertEqual(report["device_summary"]["with_foldersync"], DEVICES)
        # The server's rate: until the last FolderSync is answered, after every handshake.
        self.assertEqual(hs["answered"], DEVICES)
        self.assertGreaterEqual(hs["answered_window_s"], hs["window_s"])
        self.assertGreater(hs["answered_per_s"], 0)

    def test_a_server_chain_the_ca_does_not_vouch_for_fails_every_handshake(self):
        # eas-load verifies each distinct server chain once and then only compares bytes: a
        # chain that never verified is verified (and refused) again in every handshake.
        other = os.path.join(self.tmp, "other-root.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=not the lab root",
                        "-days", "1", "-keyout", os.path.join(self.tmp, "other-root.key"),
                        "-out", other], check=True, timeout=60, capture_output=True)
        rc, report, _ = self.run_load("--scenario", "storm", "--duration", "60", "--ca", other)
        self.assertEqual(rc, 1)
        hs = report["handshakes"]
        self.assertEqual(hs["full"], 0)
        self.assertEqual(hs["failed"], DEVICES)
        self.assertTrue(any("server certificate" in k for k in report["errors"]), report["errors"])

    def test_bad_usage_exits_2(self):
        done = subprocess.run([EAS_LOAD, "--devices", "0"], capture_output=True, text=True,
                              timeout=30)
        self.assertEqual(done.returncode, 2)


if __name__ == "__main__":
    unittest.main()

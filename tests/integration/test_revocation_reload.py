"""Revocation by CRL files and their live reload (issue 5, docs/revocation.md): a CRL changed
under a running proxy (SIGHUP or the file watch) cuts off a certificate on the next request of
a kept-alive connection; a corrupt CRL keeps the old one; a stale CRL is "status unknown",
decided by the fail mode; a resumed TLS session is checked like a full handshake.

Test CRLs are signed by the test PKI's issuing CA with `openssl ca` on a copy of its database
(the PKI itself is never modified)."""
import http.client
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
from datetime import datetime, timedelta, timezone

from harness import PKI, Client, Mock, Proxy, metric, mock_barrier, resumable, unique_name, wait_until
from test_tls import fetch as tls_fetch, pinned


class TestCA:
    """The issuing CA of the test PKI, on a private copy of its database: revokes and makes
    CRLs without touching the PKI."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, f"ca-{unique_name()}")
        os.makedirs(self.dir)
        src = os.path.join(PKI, "ca", "db", "issuing")
        for name in ("index.txt", "crlnumber"):
            if os.path.exists(os.path.join(src, name)):
                shutil.copy(os.path.join(src, name), os.path.join(self.dir, name))
        if not os.path.exists(os.path.join(self.dir, "crlnumber")):
            with open(os.path.join(self.dir, "crlnumber"), "w") as f:
                f.write("1000\n")
        with open(os.path.join(self.dir, "index.txt.attr"), "w") as f:
            f.write("unique_subject = no\n")
        self.cnf = os.path.join(self.dir, "ca.cnf")
        with open(self.cnf, "w") as f:
            f.write(f"""[ca]
default_ca = issuing
[issuing]
dir = {self.dir}
database = $dir/index.txt
crlnumber = $dir/crlnumber
certificate = {os.path.join(PKI, "ca", "issuing.pem")}
private_key = {os.path.join(PKI, "ca", "issuing.key")}
default_md = sha256
default_crl_days = 30
crl_extensions = crl_ext
[crl_ext]
authorityKeyIdentifier = keyid:always
""")

    def _ca(self, *args):
        r = subprocess.run(["openssl", "ca", "-config", self.cnf, "-name", "issuing", "-batch",
                            *args], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"openssl ca {' '.join(args)} failed: {r.stderr}")

    def revoke(self, client):
        self._ca("-revoke", os.path.join(PKI, "clients", f"{client}.pem"),
                 "-crl_reason", "keyCompromise")

    def crl(self, path, last_update=None, next_update=None):
        """Writes a CRL (PEM) of the current database to `path`, atomically (a new inode, as
        a deployment tool writes it). Times are datetimes (UTC); default: now, now + 30 days."""
        tmp = path + ".new"
        args = ["-gencrl", "-out", tmp]
        if last_update is not None:
            args += ["-crl_lastupdate", last_update.strftime("%Y%m%d%H%M%SZ")]
        if next_update is not None:
            args += ["-crl_nextupdate", next_update.strftime("%Y%m%d%H%M%SZ")]
        self._ca(*args)
        os.replace(tmp, path)


class RevocationReloadCase(unittest.TestCase):
    """A fresh mock + proxy per test (each test changes the CRL files under the proxy). The
    proxy's tls.crl points at copies in this test's directory."""

    REVOCATION = {"watch_interval": "0s"}
    ROUTES = [
        {"prefix": "/owa", "client_cert": "require"},
        {"prefix": "/ecp", "client_cert": "require", "revocation_fail": "open"},
        {"prefix": "/owa/healthcheck.htm", "client_cert": "none"},
    ]

    def setUp(self):
        if not (os.environ.get("CBAGATE_BIN") and os.environ.get("MOCK_EXCHANGE_BIN") and PKI):
            raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")
        self.tmp = tempfile.mkdtemp(prefix="cbagate-revreload-")
        self.ca = TestCA(self.tmp)
        self.issuing_crl = os.path.join(self.tmp, "issuing.crl.pem")
        self.root_crl = os.path.join(self.tmp, "root.crl.pem")
        shutil.copy(os.path.join(PKI, "crl", "issuing.crl.pem"), self.issuing_crl)
        shutil.copy(os.path.join(PKI, "crl", "root.crl.pem"), self.root_crl)
        self.prepare()
        self.mock = Mock(self.tmp)
        try:
            self.proxy = Proxy(self.tmp, [f"http://{self.mock.http}"], routes=self.ROUTES,
                               sections={"tls": {"crl": [self.issuing_crl, self.root_crl]},
                                         "revocation": dict(self.REVOCATION)})
        except BaseException:
            self.mock.stop()
            raise

    def prepare(self):
        """Hook: CRL files to write before the proxy starts."""

    def tearDown(self):
        code = self.proxy.stop()
        self.mock.stop()
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(code, 0, "the proxy did not exit cleanly")

    def mark(self):
        self._n = getattr(self, "_n", 0) + 1
        return f"rv{os.getpid()}x{id(self)}x{self._n}z"

    def backend_saw(self, marker):
        return [r for r in self.mock.requests() if marker in (r.get("target") or "")]

    def identity_seen(self, marker):
        # The mock logs a request before it answers: by the time the client has the answer,
        # the line is there or about to be.
        seen = wait_until(lambda: self.backend_saw(marker), timeout=5,
                          what=f"backend record of {marker}")
        return seen[0]["identity"]

    def access(self, marker):
        return wait_until(lambda: next((r for r in self.proxy.access_records()
                                        if marker in (r.get("query") or "")), None),
                          timeout=10, what=f"access-log line of {marker}")

    def backend_barrier(self):
        mock_barrier(self.mock)

    def assertNotForwarded(self, marker):
        self.access(marker)  # written after the exchange: a forwarded request is logged by then
        self.backend_barrier()
        self.assertEqual(self.backend_saw(marker), [], f"request {marker} reached the backend")

    def assertRefused(self, response, marker, error):
        self.assertEqual(response.status, 403, response)
        self.assertIn(b"403.13", response.body)
        rec = self.access(marker)
        self.assertEqual(rec["status"], 403)
        self.assertEqual(rec["substatus"], 13)
        self.assertEqual(rec["error"], error)
        self.assertEqual(rec["upstream"], "")
        self.assertNotForwarded(marker)
        return rec

    def output_count(self, text):
        return self.proxy.process.output().count(text)

    def reload_and_wait(self, what):
        before = self.output_count(what)
        self.proxy.process.signal(signal.SIGHUP)
        wait_until(lambda: self.output_count(what) > before, timeout=10,
                   what=f"'{what}' in the proxy's output")

    def loaded(self):
        return f"configuration {self.proxy.config_path} loaded"

    def reloads(self, result):
        return metric(self.proxy.admin, f'cbagate_reloads_total{{result="{result}"}}')


class SighupReload(RevocationReloadCase):
    def test_sighup_with_a_new_crl_refuses_the_next_request_of_a_kept_alive_connection(self):
        live = Client(self.proxy, "bob")
        try:
            m = self.mark()
            r = live.request("GET", f"/owa/?marker={m}")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(self.identity_seen(m), "bob@lab.test")
            sock = live.sock

            self.ca.revoke("bob")
            self.ca.crl(self.issuing_crl)
            self.reload_and_wait(self.loaded())
            self.assertGreaterEqual(self.reloads("ok"), 1)

            m = self.mark()
            r = live.request("GET", f"/owa/?marker={m}")
            self.assertIs(live.sock, sock, "the request did not travel on the kept-alive connection")
            rec = self.assertRefused(r, m, "revoked")
            self.assertEqual(rec["extra"].get("revocation_source"), "crl_file")
            # Refused like the other 403s: the connection stays usable (a public route works).
            r = live.request("GET", "/owa/healthcheck.htm")
            self.assertIs(live.sock, sock)
            self.assertEqual(r.status, 200, r)
        finally:
            live.close()
        # Others are unaffected.
        alice = Client(self.proxy, "alice")
        try:
            m = self.mark()
            self.assertEqual(alice.request("GET", f"/owa/?marker={m}").status, 200)
        finally:
            alice.close()

    def test_sighup_with_a_corrupt_crl_keeps_the_old_one_and_says_why(self):
        with open(self.issuing_crl, "w") as f:
            f.write("-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n")
        self.reload_and_wait("keeping the running configuration")
        out = self.proxy.process.output()
        self.assertRegex(out, re.escape(f"reload: crl '{self.issuing_crl}': ") + r".+; keeping the "
                         r"running configuration")
        self.assertGreaterEqual(self.reloads("failed"), 1)
        # The old CRL still applies: revoked is refused, alice goes through.
        m = self.mark()
        c = Client(self.proxy, "revoked")
        try:
            self.assertRefused(c.request("GET", f"/owa/?marker={m}"), m, "revoked")
        finally:
            c.close()
        m = self.mark()
        c = Client(self.proxy, "alice")
        try:
            self.assertEqual(c.request("GET", f"/owa/?marker={m}").status, 200)
            self.assertEqual(self.identity_seen(m), "alice@lab.test")
        finally:
            c.close()
        # Fixed, the next SIGHUP loads it.
        self.ca.crl(self.issuing_crl)
        self.reload_and_wait(self.loaded())


class FileWatch(RevocationReloadCase):
    REVOCATION = {"watch_interval": "100ms"}

    def test_the_file_watch_reloads_a_changed_crl_without_sighup(self):
        live = Client(self.proxy, "carol")
        try:
            m = self.mark()
            self.assertEqual(live.request("GET", f"/owa/?marker={m}").status, 200)
            sock = live.sock
            self.ca.revoke("carol")
            self.ca.crl(self.issuing_crl)

            def refused():
                marker = self.mark()
                r = live.request("GET", f"/owa/?marker={marker}")
                return (r, marker) if r.status == 403 else None
            r, m = wait_until(refused, timeout=15, what="the watch to load the new CRL")
            self.assertIs(live.sock, sock)
            self.assertRefused(r, m, "revoked")
        finally:
            live.close()
        self.assertIn(f"reload: {self.issuing_crl} changed", self.proxy.process.output())
        self.assertGreaterEqual(self.reloads("ok"), 1)

    def test_an_untouched_file_never_reloads(self):
        # Several watch intervals pass without a change (requests for half a second, not a
        # sleep): the watch itself triggers no reload.
        c = Client(self.proxy, "alice")
        try:
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                self.assertEqual(c.request("GET", "/owa/healthcheck.htm").status, 200)
        finally:
            c.close()
        self.assertEqual(self.reloads("ok"), 0)
        self.assertEqual(self.reloads("failed"), 0)
        self.assertNotIn("changed", self.proxy.process.output())


class StaleCrl(RevocationReloadCase):
    """The issuing CA's CRL is past its nextUpdate (beyond max_clock_skew): no usable status for
    client leaves. fail closed -> 403.13 "revocation_unknown"; fail open -> 200 and a warning."""

    def prepare(self):
        now = datetime.now(timezone.utc)
        self.ca.crl(self.issuing_crl, last_update=now - timedelta(days=2),
                    next_update=now - timedelta(hours=2))

    def test_stale_crl_fail_closed_is_403_13(self):
        m = self.mark()
        c = Client(self.proxy, "alice")
        try:
            rec = self.assertRefused(c.request("GET", f"/owa/?marker={m}"), m, "revocation_unknown")
        finally:
            c.close()
        self.assertIn("stale", rec["extra"].get("revocation_reason", ""))

    def test_stale_crl_fail_open_route_is_allowed_and_logged(self):
        m = self.mark()
        c = Client(self.proxy, "alice")
        try:
            r = c.request("GET", f"/ecp/?marker={m}")
        finally:
            c.close()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.identity_seen(m), "alice@lab.test")
        wait_until(lambda: re.search(r"revocation status unknown for .*Alice Example.* serial [0-9A-F]+: "
                                     r".*stale.*; allowed \(fail open\)",
                                     self.proxy.process.output()),
                   timeout=10, what="the fail-open warning")


class StaleCrlGlobalFailOpen(StaleCrl):
    REVOCATION = {"watch_interval": "0s", "fail": "open"}

    def test_stale_crl_fail_closed_is_403_13(self):
        # [revocation] fail = "open": /owa (no override) is open too.
        m = self.mark()
        c = Client(self.proxy, "alice")
        try:
            r = c.request("GET", f"/owa/?marker={m}")
        finally:
            c.close()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.identity_seen(m), "alice@lab.test")


class ResumedSession(RevocationReloadCase):
    def test_a_resumed_session_is_checked_with_the_refs_of_its_handshake(self):
        # The ticket carries the chain refs: a revoked certificate whose session resumes is
        # still refused (an identity without refs would have nothing to check).
        for version in ("1.2", "1.3"):
            with self.subTest(version=version):
                ctx = pinned("revoked", version)
                m = self.mark()
                first = tls_fetch(self.proxy, ctx, f"/owa/?marker={m}")
                self.assertEqual(first.status, 403, first)
                self.assertTrue(resumable(first.session, version))
                m = self.mark()
                again = tls_fetch(self.proxy, ctx, f"/owa/?marker={m}", session=first.session)
                self.assertTrue(again.reused, "control: the session resumed")
                self.assertEqual(again.status, 403, again)
                self.assertIn(b"403.13", again.body)
                self.assertEqual(self.access(m)["error"], "revoked")
                self.assertEqual(self.backend_saw(m), [])
                # And a good one resumes and goes through.
                ctx = pinned("alice", version)
                first = tls_fetch(self.proxy, ctx, "/owa/healthcheck.htm")
                m = self.mark()
                again = tls_fetch(self.proxy, ctx, f"/owa/?marker={m}", session=first.session)
                self.assertTrue(again.reused)
                self.assertEqual(again.status, 200, again)


if __name__ == "__main__":
    unittest.main()

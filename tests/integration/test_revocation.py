"""Revocation checking end to end (issue 5, docs/revocation.md): CRL files, CRLs downloaded from
the certificates' CRL Distribution Points, OCSP, fail closed / open (also per route), a
certificate revoked while its connection is kept alive, and the counters on /metrics.

Each class has a PKI of its own (harness.RevocationPki: certs-dev/make-pki with --cdp-base,
--ocsp-url and --ocsp-ca-url pointing at a CDP server and two OCSP responders of this process on
127.0.0.1) and one proxy; tests that need cold caches or other settings start another proxy
with self.new_proxy(...). Every refusal is checked not to have reached the backend.
SIGHUP and the file watch are tests/integration/test_revocation_reload.py."""
import threading
import unittest

from harness import (PkiRawClient, RevocationProxyTestCase, metric_sample, metrics_text,
                     wait_until)

CHECKS = "cbagate_revocation_checks_total"


def metric_sum(proxy, name, **labels):
    """The sum of every sample of `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for line in metrics_text(proxy).splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head != name and not head.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def checks(proxy, source, outcome):
    return metric_sample(metrics_text(proxy), CHECKS, source=source, outcome=outcome) or 0.0


class RevocationCase(RevocationProxyTestCase):
    """Assertions shared by the classes below."""

    def logged(self, proxy, marker):
        """proxy's access-log record of the request carrying marker (waits for it)."""
        return wait_until(lambda: next((r for r in proxy.access_records()
                                        if marker in (r.get("query") or "") or marker in (r.get("path") or "")),
                                       None), timeout=10, what=f"access-log line of {marker}")

    def refused(self, path, cert="alice", proxy=None, error="revoked", source=None):
        """GET path (a marker is appended) must be 403.13, logged with `error` (and
        extra.revocation_source == source), and never reach the backend. Returns the record."""
        proxy = proxy or self.proxy
        m = self.mark()
        r = self.get(f"{path}?marker={m}", cert=cert, proxy=proxy)
        self.assertEqual(r.status, 403, r)
        self.assertIn(b"403.13", r.body)
        rec = self.logged(proxy, m)
        self.backend_barrier()
        self.assertEqual([x for x in self.mock.requests() if m in (x.get("target") or "")], [],
                         f"refused request {m} reached the backend")
        self.assertEqual((rec["status"], rec["substatus"], rec["error"]), (403, 13, error), rec)
        if source:
            self.assertEqual(rec.get("extra", {}).get("revocation_source"), source, rec)
        return rec

    def allowed(self, path, cert="alice", proxy=None, upn=None):
        """GET path (a marker is appended) must be 200 and reach the backend with the UPN."""
        m = self.mark()
        r = self.get(f"{path}?marker={m}", cert=cert, proxy=proxy)
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["identity"], upn or f"{cert}@lab.test")
        return r

    def concurrent_first_requests(self, proxy, server, certs, n=8):
        """n requests on n new connections (certs taken in turn) sent while `server` holds its
        answers, so that they all meet the first fetch; then released. All must be 200."""
        sent, results = [], []
        lock = threading.Lock()
        before = server.count()
        server.hold()
        self.addCleanup(server.release)

        def one(i):
            c = self.client(certs[i % len(certs)], proxy=proxy)
            try:
                c.conn.request("GET", f"/owa/?concurrent={i}")  # sent; the answer is read below
                with lock:
                    sent.append(i)
                r = c.conn.getresponse()
                r.read()
                with lock:
                    results.append(r.status)
            except Exception as e:  # noqa: BLE001  (reported through results)
                with lock:
                    sent.append(i)
                    results.append(repr(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        # Every request sent while the first fetch is held at the server: none is cached yet.
        wait_until(lambda: len(sent) == n, 10, "every request sent")
        wait_until(lambda: server.count() > before, 10, "the first fetch to reach the server")
        self.assertEqual(proxy.access_records(), [], "a request was answered while the fetch was held")
        server.release()
        for t in threads:
            t.join(timeout=20)
        self.assertEqual(sorted(map(str, results)), ["200"] * n, results)


class FileCrl(RevocationCase):
    """tls.crl names the issuing CA's and the root's CRL; CDP downloads are off."""

    TLS_CRL = ("issuing.crl.pem", "root.crl.pem")
    REVOCATION = {"mode": "crl", "fetch_cdp": False, "fail": "closed"}

    def test_revoked_by_file_crl_is_403_13_and_never_forwarded(self):
        before = checks(self.proxy, "crl_file", "revoked")
        self.refused("/owa/", cert="revoked", source="crl_file")
        self.assertEqual(checks(self.proxy, "crl_file", "revoked"), before + 1)
        self.assertEqual(self.rpki.cdp.count(), 0, "fetch_cdp = false, yet the CDP was asked")

    def test_good_by_file_crl_is_forwarded_and_counted(self):
        before = checks(self.proxy, "crl_file", "good")
        self.allowed("/owa/", cert="alice")
        self.allowed("/ecp/", cert="bob")
        self.assertEqual(checks(self.proxy, "crl_file", "good"), before + 2)
        self.assertEqual(self.rpki.cdp.count(), 0)

    def test_stale_file_crl_is_unknown_closed_refused_open_allowed(self):
        # A CRL of the issuing CA whose nextUpdate passed an hour ago (beyond max_clock_skew).
        self.addCleanup(self.rpki.revoke, crl="issuing")  # a fresh CRL again for the others
        self.rpki.revoke(crl="issuing", next_update="-1 hour", last_update="-2 days")
        closed = self.new_proxy(self.TLS_CRL, dict(self.REVOCATION, max_clock_skew="1m"))
        rec = self.refused("/owa/", proxy=closed, error="revocation_unknown")
        self.assertIn("stale", rec.get("extra", {}).get("revocation_reason", ""), rec)
        opened = self.new_proxy(self.TLS_CRL, dict(self.REVOCATION, max_clock_skew="1m", fail="open"))
        self.allowed("/owa/", proxy=opened)
        out = wait_until(lambda: "allowed (fail open)" in (o := opened.process.output()) and o, 10,
                         "the fail-open warning")
        self.assertIn("revocation status unknown for ", out)


class Cdp(RevocationCase):
    """No tls.crl: the CRLs come from the CDP URLs of the certificates (mode "crl" is strict:
    the leaf's issuing.crl and the issuing CA's root.crl)."""

    TLS_CRL = ()
    REVOCATION = {"mode": "crl", "fetch_cdp": True, "fail": "closed", "retry_after": "1s"}

    def test_revoked_via_cdp_is_403_13(self):
        self.refused("/owa/", cert="revoked", source="cdp")
        self.assertGreaterEqual(self.rpki.cdp.count("/issuing.crl"), 1)

    def test_good_via_cdp_downloaded_once_for_many_requests_and_connections(self):
        p = self.new_proxy(self.TLS_CRL, self.REVOCATION)  # cold cache
        issuing, root = self.rpki.cdp.count("/issuing.crl"), self.rpki.cdp.count("/root.crl")
        for cert in ("alice", "bob", "carol"):
            c = self.client(cert, proxy=p)  # one keep-alive connection per user
            for i in range(4):
                m = self.mark()
                r = c.request("GET", f"/owa/?marker={m}")
                self.assertEqual(r.status, 200, r)
                self.assertEqual(self.backend_saw(m)[0]["identity"], f"{cert}@lab.test")
        self.assertEqual(self.rpki.cdp.count("/issuing.crl") - issuing, 1, self.rpki.cdp.counts)
        self.assertEqual(self.rpki.cdp.count("/root.crl") - root, 1, self.rpki.cdp.counts)
        self.assertEqual(checks(p, "cdp", "good"), 12)
        self.assertEqual(metric_sum(p, "cbagate_revocation_fetches_total", kind="crl"), 2)

    def test_concurrent_first_requests_share_one_download(self):
        p = self.new_proxy(self.TLS_CRL, self.REVOCATION)  # cold cache
        cdp = self.rpki.cdp
        issuing, root = cdp.count("/issuing.crl"), cdp.count("/root.crl")
        self.concurrent_first_requests(p, cdp, ("alice", "bob"))
        self.assertEqual(cdp.count("/issuing.crl") - issuing, 1, cdp.counts)
        self.assertEqual(cdp.count("/root.crl") - root, 1, cdp.counts)

    def test_cdp_down_with_fail_closed_is_403_13(self):
        self.rpki.cdp.down()
        self.addCleanup(self.rpki.cdp.up)
        p = self.new_proxy(self.TLS_CRL, self.REVOCATION)  # nothing cached
        self.refused("/owa/", proxy=p, error="revocation_unknown")
        self.assertGreaterEqual(metric_sum(p, "cbagate_revocation_fetch_errors_total", kind="crl"), 1)
        self.assertGreaterEqual(checks(p, "cdp", "unknown"), 1)


class Ocsp(RevocationCase):
    """mode "ocsp": every certificate's status from the OCSP responder of its AIA (the leaves:
    rpki.ocsp, signed by a delegated responder certificate; the issuing CA: rpki.ocsp_ca, signed
    by the root itself)."""

    TLS_CRL = ()
    REVOCATION = {"mode": "ocsp", "fail": "closed", "retry_after": "1s", "timeout": "3s"}
    ROUTES = [
        {"prefix": "/owa", "client_cert": "require"},
        {"prefix": "/ecp", "client_cert": "require", "revocation_fail": "open"},
        {"prefix": "/Microsoft-Server-ActiveSync", "client_cert": "require"},
    ]

    def test_good_by_ocsp_is_forwarded_and_cached(self):
        p = self.new_proxy(self.TLS_CRL, self.REVOCATION)
        leaf, ca = self.rpki.ocsp.count(), self.rpki.ocsp_ca.count()
        self.allowed("/owa/", cert="alice", proxy=p)
        self.assertEqual(self.rpki.ocsp.count() - leaf, 1)
        self.assertEqual(self.rpki.ocsp_ca.count() - ca, 1, "the issuing CA's status was not asked")
        self.allowed("/owa/", cert="alice", proxy=p)  # cached until nextUpdate: no new exchange
        self.assertEqual(self.rpki.ocsp.count() - leaf, 1)
        self.assertEqual(checks(p, "ocsp", "good"), 2)
        self.assertEqual(metric_sum(p, "cbagate_revocation_fetches_total", kind="ocsp"), 2)
        self.assertGreaterEqual(metric_sum(p, "cbagate_revocation_cache_entries", kind="ocsp"), 2)

    def test_concurrent_first_requests_share_one_ocsp_exchange(self):
        p = self.new_proxy(self.TLS_CRL, self.REVOCATION)  # cold cache
        leaf, ca = self.rpki.ocsp.count(), self.rpki.ocsp_ca.count()
        self.concurrent_first_requests(p, self.rpki.ocsp, ("alice",))  # one CertID
        self.assertEqual(self.rpki.ocsp.count() - leaf, 1, "alice's status was asked more than once")
        self.assertEqual(self.rpki.ocsp_ca.count() - ca, 1, "the issuing CA's status was asked more than once")

    def test_revoked_by_ocsp_is_403_13(self):
        before = checks(self.proxy, "ocsp", "revoked")
        self.refused("/owa/", cert="revoked", source="ocsp")
        self.assertEqual(checks(self.proxy, "ocsp", "revoked"), before + 1)

    def test_responder_down_with_fail_closed_is_403_13(self):
        self.rpki.ocsp.down()
        self.addCleanup(self.rpki.ocsp.up)
        p = self.new_proxy(self.TLS_CRL, self.REVOCATION)
        self.refused("/owa/", proxy=p, error="revocation_unknown")
        self.assertGreaterEqual(checks(p, "ocsp", "unknown"), 1)
        self.assertGreaterEqual(metric_sum(p, "cbagate_revocation_fetch_errors_total", kind="ocsp"), 1)

    def test_responder_down_with_fail_open_is_allowed_logged_and_counted(self):
        self.rpki.ocsp.down()
        self.addCleanup(self.rpki.ocsp.up)
        p = self.new_proxy(self.TLS_CRL, dict(self.REVOCATION, fail="open"))
        self.allowed("/owa/", cert="alice", proxy=p)
        out = wait_until(lambda: "allowed (fail open)" in (o := p.process.output()) and o, 10,
                         "the fail-open warning")
        line = next(x for x in out.splitlines() if "allowed (fail open)" in x)
        self.assertIn("revocation status unknown for ", line)
        self.assertIn("Alice Example", line)
        self.assertEqual(checks(p, "ocsp", "unknown_allowed"), 1)

    def test_route_override_fail_open_while_global_fail_closed(self):
        self.rpki.ocsp.down()
        self.addCleanup(self.rpki.ocsp.up)
        p = self.new_proxy(self.TLS_CRL, self.REVOCATION)
        self.refused("/owa/", proxy=p, error="revocation_unknown")  # fail = "closed"
        self.allowed("/ecp/", proxy=p)  # revocation_fail = "open" on /ecp
        wait_until(lambda: "allowed (fail open)" in p.process.output(), 10, "the fail-open warning")
        self.refused("/Microsoft-Server-ActiveSync", proxy=p, error="revocation_unknown")
        # A revoked certificate stays refused on the fail-open route (open is for unknown only).
        self.rpki.ocsp.up()
        self.refused("/ecp/", cert="revoked", proxy=self.proxy, source="ocsp")

    def test_revocation_during_keepalive_takes_effect_on_next_request(self):
        # Answers without nextUpdate, kept default_lifetime = 2 s: the proxy asks again soon.
        self.rpki.ocsp.ndays = None
        self.addCleanup(setattr, self.rpki.ocsp, "ndays", 1)
        p = self.new_proxy(self.TLS_CRL, dict(self.REVOCATION, default_lifetime="2s", refresh_ahead="1s"))
        c = PkiRawClient(p, self.rpki.client_context("carol"))
        self.addCleanup(c.close)

        def get(m):
            c.send(f"GET /owa/?marker={m} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            return c.read_response()

        m = self.mark()
        self.assertEqual(get(m).status, 200)
        self.assertEqual(self.backend_saw(m)[0]["identity"], "carol@lab.test")
        self.rpki.revoke("carol")
        # The same connection, request after request, until the revocation shows (bounded).
        last, tries = None, 0

        def cut():
            nonlocal last, tries
            tries += 1
            last = (self.mark(),)
            r = get(last[0])
            return r if r.status == 403 else None

        r = wait_until(cut, timeout=15, what="the revocation to reach the kept-alive connection")
        self.assertIn(b"403.13", r.body)
        rec = self.logged(p, last[0])
        self.assertEqual((rec["error"], rec.get("extra", {}).get("revocation_source")), ("revoked", "ocsp"))
        self.backend_barrier()
        self.assertEqual([x for x in self.mock.requests() if last[0] in (x.get("target") or "")], [])
        # Every request before the refusal rode the same TLS connection (one access-log client).
        clients = {x["client"] for x in p.access_records()}
        self.assertEqual(len(clients), 1, clients)

    def test_crl_and_ocsp_one_good_source_is_enough_a_revoked_one_refuses(self):
        # mode "crl+ocsp" with the file CRLs: the responder down leaves the CRL's "good".
        both = dict(self.REVOCATION, mode="crl+ocsp", fetch_cdp=False)
        self.rpki.ocsp.down()
        self.addCleanup(self.rpki.ocsp.up)
        p = self.new_proxy(("issuing.crl.pem", "root.crl.pem"), both)
        self.allowed("/owa/", cert="alice", proxy=p)
        self.refused("/owa/", cert="revoked", proxy=p)
        self.assertNotIn("allowed (fail open)", p.process.output())

    def test_metrics_name_source_and_outcome(self):
        self.allowed("/owa/", cert="bob")
        self.refused("/owa/", cert="revoked")
        text = metrics_text(self.proxy)
        self.assertIn(f"# TYPE {CHECKS} counter", text)
        self.assertGreaterEqual(metric_sample(text, CHECKS, source="ocsp", outcome="good") or 0, 1)
        self.assertGreaterEqual(metric_sample(text, CHECKS, source="ocsp", outcome="revoked") or 0, 1)
        for name in ("cbagate_revocation_fetches_total", "cbagate_revocation_fetch_errors_total",
                     "cbagate_revocation_cache_entries"):
            self.assertIn(f"# TYPE {name} ", text)


if __name__ == "__main__":
    unittest.main()

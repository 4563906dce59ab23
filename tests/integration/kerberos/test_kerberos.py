"""Kerberos constrained delegation end to end: a client certificate in, a Negotiate token that
only S4U2Self + S4U2Proxy could have produced out, accepted by the backend with its own keytab.

Needs the `kdc` ctest fixture (tests/support/kdc/start-kdc): CBAGATE_KDC_DIR/env.sh."""
import hashlib
import os
import shutil
import tempfile
import unittest

from harness import PKI, Client, Mock, Proxy, RawClient, ROUTES_DEFAULT, metric, request, wait_until

KDC_DIR = os.environ.get("CBAGATE_KDC_DIR", "")


def kdc_env():
    env = {}
    with open(os.path.join(KDC_DIR, "env.sh")) as f:
        for line in f:
            line = line.strip()
            if line.startswith("export ") and "=" in line:
                k, v = line[len("export "):].split("=", 1)
                env[k] = v.strip("'\"")
    return env


def kdc_log_lines(env, text):
    """The KDC log's lines holding `text`. The log is the fixture's, shared by every kdc test:
    the tests that count S4U2Proxy lines hold ctest's RESOURCE_LOCK kdc_s4u_log."""
    with open(env["KCD_KDC_LOG"], errors="replace") as f:
        return [line.rstrip("\n") for line in f if text in line]


def realm_and_workdir(cls, prefix):
    """Reads the KDC fixture's realm into cls.env and makes cls.tmp; the mocks' acceptors read
    KRB5_CONFIG from the environment."""
    if not os.path.exists(os.path.join(KDC_DIR, "env.sh")):
        raise AssertionError(f"no KDC realm in {KDC_DIR}: run the kdc_setup fixture "
                             "(tests/support/install-deps kdc installs its packages)")
    cls.env = kdc_env()
    cls.tmp = tempfile.mkdtemp(prefix=prefix)
    os.environ["KRB5_CONFIG"] = cls.env["KRB5_CONFIG"]
    cls.proxies = []


class Kerberos(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        realm_and_workdir(cls, "cbagate-krb-")
        cls.mock = Mock(cls.tmp, tls=True, heartbeat_cap=1, extra_args=(
            "--negotiate-keytab", cls.env["KCD_BACKEND_KEYTAB"], "--require-negotiate",
            "--channel-bindings", "require"))

    @classmethod
    def tearDownClass(cls):
        for p in cls.proxies:
            p.stop()
        cls.mock.stop()
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def proxy(self, keytab=None, principal=None, target="HTTP/exchange.lab.test", tls=False,
              upn_sources=("san", "subject")):
        upstream = f"https://{self.mock.https}" if tls else f"http://{self.mock.http}"
        p = Proxy(self.tmp, [upstream], routes=ROUTES_DEFAULT, sections={
            "identity": {"mode": "kerberos"},
            "auth": {"upn_sources": list(upn_sources)},
            "kerberos": {"keytab": keytab or self.env["KCD_PROXY_KEYTAB"],
                         "principal": principal or self.env["KCD_PROXY_PRINCIPAL"],
                         "target_spn": target, "upn_to_principal": "realm",
                         "krb5_config": self.env["KRB5_CONFIG"]},
        })
        self.proxies.append(p)
        return p

    def saw(self, marker):
        return wait_until(lambda: [r for r in self.mock.requests() if marker in (r.get("target") or "")],
                          timeout=10, what=f"backend record {marker}")

    def test_alice_reaches_exchange_as_alice_through_s4u2proxy_and_warm_users_skip_the_kdc(self):
        p = self.proxy()
        s4u = "CONSTRAINED-DELEGATION s4u-client=alice@LAB.TEST"
        before = len(kdc_log_lines(self.env, s4u))
        r = request(p, "GET", "/owa/?marker=krb1", cert="alice")
        self.assertEqual(r.status, 200, r)
        rec = self.saw("krb1")[0]
        self.assertEqual(rec["negotiate_principal"], "alice@LAB.TEST")
        self.assertIsNone(rec["identity"])  # no identity header in Kerberos mode
        # Only S4U2Proxy could have made this ticket: the proxy never had alice's password.
        made = kdc_log_lines(self.env, s4u)[before:]
        self.assertEqual(len(made), 1, made)
        # Warm: more requests for alice, on new connections too, cause no KDC exchange.
        for i in range(3):
            r = request(p, "GET", f"/owa/?marker=krbwarm{i}", cert="alice")
            self.assertEqual(r.status, 200)
            self.assertEqual(self.saw(f"krbwarm{i}")[0]["negotiate_principal"], "alice@LAB.TEST")
        made = kdc_log_lines(self.env, s4u)[before:]
        self.assertEqual(len(made), 1, made)
        recs = p.wait_access_records(4)
        cache = [dict(x.get("extra", {})).get("krb_cache") if isinstance(x.get("extra"), list)
                 else x.get("extra", {}).get("krb_cache") for x in recs]
        self.assertEqual(cache.count("miss"), 1, recs)
        self.assertEqual(cache.count("hit"), 3, recs)

    def test_two_users_never_share_a_backend_connection(self):
        p = self.proxy()
        a, b = Client(p, "alice"), Client(p, "bob")
        try:
            for i in range(4):
                self.assertEqual(a.request("GET", f"/owa/?marker=alt-a{i}").status, 200)
                self.assertEqual(b.request("GET", f"/owa/?marker=alt-b{i}").status, 200)
        finally:
            a.close()
            b.close()
        conns = {"alice@LAB.TEST": set(), "bob@LAB.TEST": set()}
        for i in range(4):
            for who, m in (("alice@LAB.TEST", f"alt-a{i}"), ("bob@LAB.TEST", f"alt-b{i}")):
                rec = self.saw(m)[0]
                self.assertEqual(rec["negotiate_principal"], who)
                conns[who].add(rec["connection"])
        self.assertFalse(conns["alice@LAB.TEST"] & conns["bob@LAB.TEST"], conns)
        # and each user's connection was kept and reused
        self.assertLess(len(conns["alice@LAB.TEST"]), 4)

    def test_unknown_and_disabled_users_are_403_and_others_keep_working(self):
        p = self.proxy()
        r = request(p, "GET", "/owa/?marker=krb-unknown", cert="upn-subject-cn")  # dave@lab.test
        self.assertEqual(r.status, 403, r)
        r = request(p, "GET", "/owa/?marker=krb-disabled", cert="carol")
        self.assertEqual(r.status, 403, r)
        r = request(p, "GET", "/owa/?marker=krb-after", cert="bob")
        self.assertEqual(r.status, 200)
        recs = {x["query"].split("=")[-1]: x for x in p.wait_access_records(3)}
        self.assertTrue(recs["krb-unknown"]["error"].startswith("delegation:"), recs["krb-unknown"])
        self.assertTrue(recs["krb-disabled"]["error"].startswith("delegation:"), recs["krb-disabled"])
        self.assertNotEqual(recs["krb-unknown"]["error"], recs["krb-disabled"]["error"])
        self.assertEqual([r for r in self.mock.requests() if "krb-unknown" in r["target"]
                          or "krb-disabled" in r["target"]], [])

    def test_delegation_not_allowed_to_the_target_is_403(self):
        p = self.proxy(target="HTTP/nodeleg.lab.test")
        r = request(p, "GET", "/owa/?marker=krb-nodeleg", cert="alice")
        self.assertEqual(r.status, 403, r)
        rec = p.wait_access_records(1)[-1]
        self.assertIn("delegation", rec["error"])

    def test_kdc_unreachable_is_503_with_retry_after(self):
        p = self.proxy(keytab=self.env["KCD_OFFLINE_KEYTAB"], principal=self.env["KCD_OFFLINE_PRINCIPAL"])
        r = request(p, "GET", "/owa/?marker=krb-down", cert="alice")
        self.assertEqual(r.status, 503, r)
        self.assertIsNotNone(r.header("Retry-After"))
        self.assertEqual([x for x in self.mock.requests() if "krb-down" in x["target"]], [])

    def test_channel_bindings_over_https_are_accepted_by_an_extended_protection_backend(self):
        p = self.proxy(tls=True)
        r = request(p, "GET", "/owa/?marker=krb-cb", cert="alice")
        self.assertEqual(r.status, 200, r)
        rec = self.saw("krb-cb")[0]
        self.assertTrue(rec["tls"])
        self.assertEqual(rec["negotiate_principal"], "alice@LAB.TEST")
        self.assertTrue(rec["negotiate_channel_bound"])

    def test_client_authorization_is_never_forwarded(self):
        p = self.proxy()
        r = request(p, "GET", "/owa/?marker=krb-auth", cert="alice",
                    headers=[("Authorization", "Negotiate ZmFrZQ==")])
        self.assertEqual(r.status, 200)
        rec = self.saw("krb-auth")[0]
        auth = [v for k, vs in rec["headers"].items() if k.lower() == "authorization" for v in vs]
        self.assertEqual(len(auth), 1)
        self.assertNotEqual(auth[0], "Negotiate ZmFrZQ==")


    # --- the proxy's own credential at start (issue 13) ------------------------------------------
    def config_with(self, keytab, principal):
        from test_lifecycle import write_config  # noqa: E402 (only these tests write one)
        return write_config(self.tmp, routes=ROUTES_DEFAULT, sections={
            "identity": {"mode": "kerberos"},
            "kerberos": {"keytab": keytab, "principal": principal, "target_spn": "HTTP/exchange.lab.test",
                         "krb5_config": self.env["KRB5_CONFIG"]}})

    def run_cbagate(self, *args):
        import subprocess  # noqa: E402
        from harness import BIN  # noqa: E402
        return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    def test_check_config_gets_a_ticket_with_the_keytab(self):
        r = self.run_cbagate("--check-config", self.config_with(self.env["KCD_PROXY_KEYTAB"],
                                                                self.env["KCD_PROXY_PRINCIPAL"]))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("test is successful", r.stdout)

    def test_a_keytab_with_an_outdated_key_refuses_to_start(self):
        import subprocess  # noqa: E402
        kt = os.path.join(self.tmp, "outdated.keytab")
        principal = self.env["KCD_PROXY_PRINCIPAL"]
        subprocess.run(["ktutil"], check=True, capture_output=True, text=True,
                       input=f"addent -password -p {principal} -k 1 -e aes256-cts-hmac-sha1-96\n"
                             f"not-the-password\nwkt {kt}\nquit\n")
        os.chmod(kt, 0o600)  # a keytab readable by its owner only (issue 16)
        path = self.config_with(kt, principal)
        r = self.run_cbagate("--check-config", path)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn(f"kerberos: cannot get a ticket for {principal} with keytab {kt}", r.stderr)
        r = self.run_cbagate("-c", path)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"kerberos: cannot get a ticket for {principal}", r.stderr)

    def test_a_keytab_without_the_principal_refuses_to_start(self):
        path = self.config_with(self.env["KCD_PROXY_KEYTAB"], "HTTP/other.lab.test@LAB.TEST")
        r = self.run_cbagate("-c", path)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"kerberos: keytab {self.env['KCD_PROXY_KEYTAB']} has no key for HTTP/other.lab.test@LAB.TEST",
                      r.stderr)

    def test_kdc_unreachable_at_start_is_a_warning_and_readyz_says_why(self):
        p = self.proxy(keytab=self.env["KCD_OFFLINE_KEYTAB"], principal=self.env["KCD_OFFLINE_PRINCIPAL"])
        self.assertIn("starting anyway", p.process.output())
        import http.client  # noqa: E402
        host, port = p.admin.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", "/readyz")
            res = conn.getresponse()
            body = res.read().decode()
        finally:
            conn.close()
        self.assertEqual(res.status, 503, body)
        self.assertIn("not ready: no Kerberos credential: kerberos: cannot get a ticket", body)

def krb_extra(rec, key):
    extra = rec.get("extra", {})
    return dict(extra).get(key) if isinstance(extra, list) else extra.get(key)


class KerberosSessions(unittest.TestCase):
    """kerberos.persistent_auth: a backend that keeps a connection authenticated (IIS
    authPersistNonNTLM, Persistent-Auth: true) gets one token per connection, not per request."""

    @classmethod
    def setUpClass(cls):
        realm_and_workdir(cls, "cbagate-krbsess-")
        base = ("--negotiate-keytab", cls.env["KCD_BACKEND_KEYTAB"], "--require-negotiate",
                "--negotiate-persist")
        cls.persist = Mock(cls.tmp, extra_args=base)
        # IIS dropping a connection's authentication: one token-less request per token, then 401.
        cls.persist_once = Mock(cls.tmp,
                                extra_args=base + ("--negotiate-persist-max", "1"))
        # Holds a Ping 2 s: past park_after, so the request on the session is parked meanwhile.
        cls.persist_hold = Mock(cls.tmp, heartbeat_cap=2, extra_args=base)
        # IIS asking again, but only after 1.5 s: past park_after.
        cls.persist_once_slow = Mock(cls.tmp, extra_args=base + (
            "--negotiate-persist-max", "1", "--negotiate-challenge-delay-ms", "1500"))

    @classmethod
    def tearDownClass(cls):
        for p in cls.proxies:
            p.stop()
        cls.persist.stop()
        cls.persist_once.stop()
        cls.persist_hold.stop()
        cls.persist_once_slow.stop()
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def proxy(self, mock, persistent_auth=None):
        kerberos = {"keytab": self.env["KCD_PROXY_KEYTAB"],
                    "principal": self.env["KCD_PROXY_PRINCIPAL"],
                    "target_spn": "HTTP/exchange.lab.test", "krb5_config": self.env["KRB5_CONFIG"]}
        if persistent_auth is not None:
            kerberos["persistent_auth"] = persistent_auth
        p = Proxy(self.tmp, [f"http://{mock.http}"], routes=ROUTES_DEFAULT,
                  sections={"identity": {"mode": "kerberos"}, "kerberos": kerberos})
        self.proxies.append(p)
        return p

    def saw(self, mock, marker, n=1):
        return wait_until(lambda: (lambda r: r if len(r) >= n else None)(
            [r for r in mock.requests() if f"marker={marker}" in (r.get("target") or "")]),
            timeout=10, what=f"{n} backend record(s) of {marker}")

    @staticmethod
    def ask(raw, method, marker, body=b""):
        """One request, its header and body in one write (one TLS record when small, as a phone
        sends a Sync); the response's status."""
        head = f"{method} /owa/?marker={marker} HTTP/1.1\r\nHost: localhost\r\n"
        if method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        raw.send(head.encode() + b"\r\n" + body)
        return raw.read_response().status

    def answered_after_parking(self, proxy, raw):
        """The request `raw` has just sent is parked by the proxy (its gauge says so), then
        answered 200, and nothing stays parked."""
        wait_until(lambda: metric(proxy.admin, "cbagate_requests_parked") == 1, timeout=10,
                   what="the request parked")
        r = raw.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(metric(proxy.admin, "cbagate_requests_parked"), 0)

    def test_a_backend_session_carries_the_users_later_requests_without_a_token(self):
        p = self.proxy(self.persist)
        a = RawClient(p, "alice")
        try:
            self.assertEqual(self.ask(a, "GET", "ses1"), 200)
            self.assertEqual(self.ask(a, "GET", "ses2"), 200)
            self.assertEqual(self.ask(a, "POST", "ses3", b"s" * 300), 200)
            # A body larger than one relay chunk is streamed, so it could not be sent again if the
            # backend asked: it carries a token.
            self.assertEqual(self.ask(a, "POST", "ses4", b"L" * 20000), 200)
            self.assertEqual(self.ask(a, "GET", "ses5"), 200)
        finally:
            a.close()
        first = self.saw(self.persist, "ses1")[0]
        self.assertEqual(first["negotiate_principal"], "alice@LAB.TEST")
        for m in ("ses2", "ses3", "ses5"):
            rec = self.saw(self.persist, m)[0]
            self.assertEqual(rec["status"], 200, rec)
            self.assertFalse(rec["negotiate"], rec)  # no Authorization at all
            self.assertEqual(rec["negotiate_session_user"], "alice@LAB.TEST", rec)
            self.assertEqual(rec["connection"], first["connection"], rec)
        self.assertEqual(self.saw(self.persist, "ses3")[0]["body_bytes"], 300)
        streamed = self.saw(self.persist, "ses4")[0]
        self.assertEqual(streamed["negotiate_principal"], "alice@LAB.TEST")
        self.assertEqual(streamed["body_bytes"], 20000)
        recs = p.wait_access_records(5)
        self.assertEqual([krb_extra(r, "krb_cache") for r in recs],
                         ["miss", "session", "session", "hit", "session"], recs)
        self.assertEqual(metric(p.admin, "cbagate_kerberos_session_requests_total"), 3)
        # Another user never rides alice's session: bob's first request carries bob's token, on
        # a backend connection of his own.
        b = RawClient(p, "bob")
        try:
            self.assertEqual(self.ask(b, "GET", "ses-bob"), 200)
        finally:
            b.close()
        rec = self.saw(self.persist, "ses-bob")[0]
        self.assertEqual(rec["negotiate_principal"], "bob@LAB.TEST")
        self.assertNotEqual(rec["connection"], first["connection"])

    def test_a_401_to_a_session_request_is_sent_again_with_a_token_not_passed_on(self):
        p = self.proxy(self.persist_once)
        a = RawClient(p, "alice")
        try:
            self.assertEqual(self.ask(a, "GET", "once1"), 200)
            self.assertEqual(self.ask(a, "POST", "once2", b"x" * 200), 200)
            self.assertEqual(self.ask(a, "POST", "once3", b"y" * 250), 200)  # the backend asks again
            self.assertEqual(self.ask(a, "GET", "once4"), 200)
        finally:
            a.close()
        self.assertFalse(self.saw(self.persist_once, "once2")[0]["negotiate"])
        asked, again = self.saw(self.persist_once, "once3", n=2)[:2]
        self.assertEqual((asked["status"], asked["negotiate"], asked["negotiate_session_user"]),
                         (401, False, None), asked)
        self.assertEqual((again["status"], again["negotiate_principal"], again["body_bytes"]),
                         (200, "alice@LAB.TEST", 250), again)
        self.assertEqual(again["body_sha256"], hashlib.sha256(b"y" * 250).hexdigest())
        # The token renewed the session: the next request goes without one again.
        self.assertEqual(self.saw(self.persist_once, "once4")[0]["negotiate_session_user"],
                         "alice@LAB.TEST")
        self.assertEqual(metric(p.admin, "cbagate_kerberos_session_resends_total"), 1)
        recs = p.wait_access_records(4)
        self.assertEqual([r["status"] for r in recs], [200, 200, 200, 200], recs)
        self.assertEqual(krb_extra(recs[2], "krb_cache"), "hit", recs[2])
        self.assertEqual(krb_extra(recs[2], "krb_session"), "401, sent again with a token", recs[2])

    def test_a_ping_on_a_backend_session_is_parked_and_answered_on_it(self):
        # relay_keeping's exchange parked (the request kept to be sent again moves with it) and
        # resumed: the Ping's answer comes back on the session, without a token.
        p = self.proxy(self.persist_hold)
        ping = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "mock-exchange",
                            "fixtures", "ping_req.wbxml")
        with open(ping, "rb") as f:
            body = f.read()
        a = RawClient(p, "alice", timeout=30)
        try:
            self.assertEqual(self.ask(a, "GET", "hold1"), 200)
            a.send((f"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=krbhold"
                    f"&DeviceType=Y&marker=hold2 HTTP/1.1\r\nHost: localhost\r\n"
                    f"Content-Type: application/vnd.ms-sync.wbxml\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
            self.answered_after_parking(p, a)
            self.assertEqual(self.ask(a, "GET", "hold3"), 200)
        finally:
            a.close()
        first = self.saw(self.persist_hold, "hold1")[0]
        for m in ("hold2", "hold3"):
            rec = self.saw(self.persist_hold, m)[0]
            self.assertFalse(rec["negotiate"], rec)
            self.assertEqual(rec["negotiate_session_user"], "alice@LAB.TEST", rec)
            self.assertEqual(rec["connection"], first["connection"], rec)
        recs = p.wait_access_records(3)
        self.assertEqual([krb_extra(r, "krb_cache") for r in recs], ["miss", "session", "session"], recs)

    def test_a_401_that_comes_after_the_request_was_parked_is_sent_again_with_a_token(self):
        # The backend takes 1.5 s to ask again: the session request is parked meanwhile (its
        # exchange keeps the request it may have to send again), the 401 resumes it, and the
        # same bytes go again with a token; the client sees only the 200.
        p = self.proxy(self.persist_once_slow)
        body = b"w" * 230
        a = RawClient(p, "alice", timeout=30)
        try:
            self.assertEqual(self.ask(a, "GET", "slow1"), 200)
            self.assertEqual(self.ask(a, "GET", "slow2"), 200)  # the session's one token-less use
            a.send(f"POST /owa/?marker=slow3 HTTP/1.1\r\nHost: localhost\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            self.answered_after_parking(p, a)
            self.assertEqual(self.ask(a, "GET", "slow4"), 200)
        finally:
            a.close()
        asked, again = self.saw(self.persist_once_slow, "slow3", n=2)[:2]
        self.assertEqual((asked["status"], asked["negotiate"]), (401, False), asked)
        self.assertEqual((again["status"], again["negotiate_principal"], again["body_bytes"]),
                         (200, "alice@LAB.TEST", 230), again)
        self.assertEqual(again["body_sha256"], hashlib.sha256(body).hexdigest())
        self.assertEqual(metric(p.admin, "cbagate_kerberos_session_resends_total"), 1)
        recs = p.wait_access_records(4)
        self.assertEqual([r["status"] for r in recs], [200, 200, 200, 200], recs)
        self.assertEqual(krb_extra(recs[2], "krb_session"), "401, sent again with a token", recs[2])

    def test_persistent_auth_false_sends_a_token_with_every_request(self):
        p = self.proxy(self.persist, persistent_auth=False)
        a = Client(p, "alice")
        try:
            for i in range(3):
                self.assertEqual(a.request("GET", f"/owa/?marker=every{i}").status, 200)
        finally:
            a.close()
        for i in range(3):
            self.assertEqual(self.saw(self.persist, f"every{i}")[0]["negotiate_principal"],
                             "alice@LAB.TEST")
        self.assertEqual(metric(p.admin, "cbagate_kerberos_session_requests_total"), 0)


if __name__ == "__main__":
    unittest.main()

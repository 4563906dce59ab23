#!/usr/bin/env python3
"""Component test (ctest label `kdc`): the mock Exchange accepts HTTP Negotiate with its keytab.

Needs the realm of tests/support/kdc/start-kdc (the `kdc` ctest fixture) and reads DIR/env.sh.
alice gets a service ticket for HTTP/exchange.lab.test the plain way (kinit with her password into
a private ccache, then `curl --negotiate`, which Debian builds with GSSAPI), so nothing of the
proxy's own Kerberos code is involved.

    negotiate_test.py --binary build/tests/mock-exchange/mock-exchange \
        --client build/tests/mock-exchange/mock-negotiate-client --kdc-dir build/test-kdc [-k name]

Channel bindings: curl's Negotiate sends none, so with --channel-bindings require it gets 401 and
with ignore 200; mock-negotiate-client adds tls-server-end-point bindings (hash computed here from
the certificate's DER) to show that correct ones pass and wrong ones fail.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import hashlib
import subprocess
import sys
import tempfile
import time
import traceback


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*export\s+([A-Za-z_0-9]+)=(.*)$", line.strip())
            if m:
                env[m.group(1)] = m.group(2).strip().strip("'\"")
    return env


class Mock:
    """One mock-exchange process (plain HTTP, optionally HTTPS) on ephemeral ports."""

    def __init__(self, binary, workdir, name, args, env):
        self.name = name
        self.ready = os.path.join(workdir, name + ".ready.json")
        self.log_path = os.path.join(workdir, name + ".log.jsonl")
        self.err_path = os.path.join(workdir, name + ".stderr")
        cmd = [binary, "--listen", "127.0.0.1:0", "--ready-file", self.ready,
               "--request-log", self.log_path] + args
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err, env=env)
        deadline = time.monotonic() + 15
        while not os.path.exists(self.ready):
            check(time.monotonic() < deadline, name + ": no ready file")
            try:
                self.proc.wait(timeout=0.02)
                raise Failure("%s: exited early with %s: %s" % (
                    name, self.proc.returncode, open(self.err_path).read()))
            except subprocess.TimeoutExpired:
                pass
        with open(self.ready) as f:
            ports = json.load(f)
        self.port = int(ports["http"][0].rsplit(":", 1)[1])
        self.tls_port = int(ports["https"][0].rsplit(":", 1)[1]) if ports["https"] else None

    def request(self, method, target, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, target, headers=headers or {})
            r = c.getresponse()
            return r, r.read()
        finally:
            c.close()

    def tls_request(self, method, target, headers=None):
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE  # throwaway certificate; the test is about Negotiate
        c = http.client.HTTPSConnection("127.0.0.1", self.tls_port, timeout=30, context=tls)
        try:
            c.request(method, target, headers=headers or {})
            r = c.getresponse()
            return r, r.read()
        finally:
            c.close()

    def log(self):
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def entry(self, request_id):
        """The log line of a request. The mock writes it just after the response, so a client
        may see the answer first: poll, bounded."""
        deadline = time.monotonic() + 10
        while True:
            for e in self.log():
                if e["id"] == int(request_id):
                    return e
            check(time.monotonic() < deadline, "%s: no log entry %s" % (self.name, request_id))
            time.sleep(0.01)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.err.close()
        return self.proc.returncode


def curl(ctx, port, path="/owa/", tls=False, extra=None):
    """curl --negotiate as alice; returns (status, headers dict lower-case, token sent or None)."""
    scheme = "https" if tls else "http"
    cmd = ["curl", "-sS", "-v", "-o", "/dev/null", "-D", "-", "--max-time", "20",
           "--negotiate", "-u", ":", "--resolve", "exchange.lab.test:%d:127.0.0.1" % port]
    if tls:
        cmd.append("-k")  # throwaway self-signed certificate; the test is about Negotiate
    cmd += (extra or []) + ["%s://exchange.lab.test:%d%s" % (scheme, port, path)]
    p = subprocess.run(cmd, env=ctx["env"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, "curl failed (%d): %s" % (p.returncode, p.stderr[-2000:]))
    # -D - prints every response header block (401 then 200); keep the last one.
    blocks = [b for b in re.split(r"\r?\n\r?\n", p.stdout) if b.startswith("HTTP/")]
    check(blocks, "curl printed no response: " + p.stdout)
    lines = blocks[-1].splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    tokens = re.findall(r"^> Authorization: Negotiate (\S+)", p.stderr, re.M)
    return status, headers, (tokens[-1] if tokens else None)


# --- cases -------------------------------------------------------------------------------------

def test_alice_authenticated_by_ticket(ctx):
    m = ctx["req"]
    status, h, token = curl(ctx, m.port)
    check(token is not None, "curl sent no Negotiate token")
    check(status == 200, "expected 200, got %d" % status)
    check(h.get("x-mock-principal") == "alice@LAB.TEST", "X-Mock-Principal: %r" % h)
    check(h.get("www-authenticate", "").startswith("Negotiate "), "no mutual-auth reply token")
    e = m.entry(h["x-mock-request-id"])
    check(e["negotiate"] is True and e["negotiate_principal"] == "alice@LAB.TEST", str(e))
    check(e["negotiate_error"] is None, str(e))
    check(e["negotiate_mech"] == "spnego" and e["negotiate_inner_mech"] == "krb5", str(e))
    check(isinstance(e["negotiate_flags"], int) and "mutual" in e["negotiate_flag_names"], str(e))
    check(e["negotiate_delegated"] is False, "curl without --delegation delegates nothing: " + str(e))
    ctx["replay_token"] = token


def test_no_token_is_401_negotiate(ctx):
    m = ctx["req"]
    for path in ("/owa/", "/ecp/", "/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=a&DeviceId=d&DeviceType=t"):
        r, _ = m.request("GET", path)
        check(r.status == 401, "%s: expected 401, got %d" % (path, r.status))
        check(r.getheader("WWW-Authenticate") == "Negotiate", "%s: %r" % (path, r.getheaders()))
        check(r.getheader("X-Mock-Principal") == "-", str(r.getheaders()))
        e = m.entry(r.getheader("X-Mock-Request-Id"))
        check(e["negotiate"] is False and e["negotiate_error"] == "no Negotiate token", str(e))
    r, _ = m.request("GET", "/owa/healthcheck.htm")
    check(r.status == 200, "the health check needs no authentication: %d" % r.status)


def test_garbage_token_is_401_with_error(ctx):
    m = ctx["req"]
    for token in ("YIIBbm9uc2Vuc2U=", "not*base64"):
        r, _ = m.request("GET", "/owa/", {"Authorization": "Negotiate " + token})
        check(r.status == 401, "expected 401, got %d" % r.status)
        check(r.getheader("WWW-Authenticate") == "Negotiate", str(r.getheaders()))
        e = m.entry(r.getheader("X-Mock-Request-Id"))
        check(e["negotiate"] is True and e["negotiate_principal"] is None, str(e))
        check(e["negotiate_error"], "negotiate_error not logged: " + str(e))
    check("gss_accept_sec_context" in e["negotiate_error"] or "base64" in e["negotiate_error"], str(e))


def test_replayed_token_is_refused(ctx):
    m = ctx["req"]
    token = ctx.get("replay_token")
    check(token, "needs test_alice_authenticated_by_ticket first")
    r, _ = m.request("GET", "/owa/", {"Authorization": "Negotiate " + token})
    check(r.status == 401, "a replayed token must fail, got %d" % r.status)
    e = m.entry(r.getheader("X-Mock-Request-Id"))
    check("replay" in (e["negotiate_error"] or "").lower(), str(e))


def test_wrong_keytab_is_401(ctx):
    # The mock holds HTTP/nodeleg.lab.test's keytab; alice's ticket is for HTTP/exchange.lab.test.
    m = ctx["wrong"]
    status, h, token = curl(ctx, m.port)
    check(token is not None and status == 401, "expected 401 after a token, got %d" % status)
    e = m.entry(h["x-mock-request-id"])
    check("keytab" in (e["negotiate_error"] or ""), str(e))


def test_identity_header_path_unchanged_without_require(ctx):
    m = ctx["plain"]
    r, body = m.request("GET", "/owa/", {"X-Client-UPN": "bob@lab.test"})
    check(r.status == 200, "expected 200, got %d" % r.status)
    check(r.getheader("X-Mock-Identity") == "bob@lab.test", str(r.getheaders()))
    check(r.getheader("X-Mock-Principal") == "-", str(r.getheaders()))
    check(r.getheader("WWW-Authenticate") is None, str(r.getheaders()))
    e = m.entry(r.getheader("X-Mock-Request-Id"))
    check(e["identity"] == "bob@lab.test" and e["negotiate"] is False, str(e))
    check(e["negotiate_error"] is None, str(e))
    # A token that comes anyway is still checked and reported, without deciding the answer. The
    # replay cache is per process, so the token the `req` mock saw is new to this one.
    r, _ = m.request("GET", "/owa/", {"Authorization": "Negotiate " + ctx["replay_token"]})
    check(r.status == 200 and r.getheader("X-Mock-Principal") == "alice@LAB.TEST",
          str(r.getheaders()))
    r, _ = m.request("GET", "/owa/", {"Authorization": "Negotiate YIIBbm9uc2Vuc2U="})
    check(r.status == 200 and r.getheader("X-Mock-Principal") == "-", str(r.getheaders()))
    check(m.entry(r.getheader("X-Mock-Request-Id"))["negotiate_error"], "error not logged")


def test_channel_bindings_require_refuses_unbound_token(ctx):
    m = ctx["cb_require"]
    status, h, token = curl(ctx, m.tls_port, tls=True)
    check(token is not None, "curl sent no token")
    check(status == 401, "curl sends no channel bindings: expected 401, got %d" % status)
    check(h.get("www-authenticate") == "Negotiate", str(h))
    e = m.entry(h["x-mock-request-id"])
    check(e["tls"] is True and e["negotiate_channel_bound"] is False, str(e))
    check("channel bindings" in (e["negotiate_error"] or ""), str(e))
    check("alice@LAB.TEST" in e["negotiate_error"], "the initiator is named in the error: " + str(e))
    # Plain HTTP has no bindings to check: the same token kind is accepted there.
    status, h, _ = curl(ctx, m.port)
    check(status == 200 and h.get("x-mock-principal") == "alice@LAB.TEST", str(h))


def test_channel_bindings_ignore_accepts_unbound_token(ctx):
    m = ctx["cb_ignore"]
    status, h, _ = curl(ctx, m.tls_port, tls=True)
    check(status == 200, "expected 200 with --channel-bindings ignore, got %d" % status)
    check(h.get("x-mock-principal") == "alice@LAB.TEST", str(h))


def client_token(ctx, cb_hash=None):
    """A fresh token for HTTP@exchange.lab.test from alice's ccache, with bindings if given."""
    cmd = [ctx["client"], "--service", "HTTP@exchange.lab.test"]
    if cb_hash is not None:
        cmd += ["--cb-hash", cb_hash.hex()]
    p = subprocess.run(cmd, env=ctx["env"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, "mock-negotiate-client: " + p.stderr)
    return p.stdout.strip()


def test_channel_bindings_require_accepts_correct_bindings(ctx):
    # The hash is computed here, independently of the mock: SHA-256 of the certificate's DER
    # (an ECDSA-with-SHA256 certificate, RFC 5929 4.1).
    m = ctx["cb_require"]
    r, _ = m.tls_request("GET", "/owa/",
                         {"Authorization": "Negotiate " + client_token(ctx, ctx["cert_sha256"])})
    check(r.status == 200, "correct bindings: expected 200, got %d" % r.status)
    check(r.getheader("X-Mock-Principal") == "alice@LAB.TEST", str(r.getheaders()))
    e = m.entry(r.getheader("X-Mock-Request-Id"))
    check(e["negotiate_channel_bound"] is True and "channel_bound" in e["negotiate_flag_names"],
          str(e))


def test_channel_bindings_require_refuses_wrong_bindings(ctx):
    m = ctx["cb_require"]
    wrong = hashlib.sha256(b"another certificate").digest()
    r, _ = m.tls_request("GET", "/owa/", {"Authorization": "Negotiate " + client_token(ctx, wrong)})
    check(r.status == 401, "wrong bindings: expected 401, got %d" % r.status)
    e = m.entry(r.getheader("X-Mock-Request-Id"))
    check("channel bindings" in (e["negotiate_error"] or "").lower(), str(e))
    # With ignore the mock passes no bindings, so the same kind of token is accepted.
    m = ctx["cb_ignore"]
    r, _ = m.tls_request("GET", "/owa/", {"Authorization": "Negotiate " + client_token(ctx, wrong)})
    check(r.status == 200 and r.getheader("X-Mock-Principal") == "alice@LAB.TEST",
          str(r.getheaders()))


def test_startup_fails_on_missing_keytab(ctx):
    p = subprocess.run([ctx["binary"], "--listen", "127.0.0.1:0", "--negotiate-keytab",
                        os.path.join(ctx["tmp"], "nosuch.keytab")],
                       env=ctx["env"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 1, "expected exit 1, got %d" % p.returncode)
    check("--negotiate-keytab" in p.stderr, p.stderr)
    p = subprocess.run([ctx["binary"], "--listen", "127.0.0.1:0", "--require-negotiate"],
                       env=ctx["env"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 2, "--require-negotiate without a keytab: expected 2, got %d" % p.returncode)


TESTS = [
    test_alice_authenticated_by_ticket,
    test_no_token_is_401_negotiate,
    test_garbage_token_is_401_with_error,
    test_replayed_token_is_refused,
    test_wrong_keytab_is_401,
    test_identity_header_path_unchanged_without_require,
    test_channel_bindings_require_refuses_unbound_token,
    test_channel_bindings_ignore_accepts_unbound_token,
    test_channel_bindings_require_accepts_correct_bindings,
    test_channel_bindings_require_refuses_wrong_bindings,
    test_startup_fails_on_missing_keytab,
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--client", required=True, help="mock-negotiate-client")
    ap.add_argument("--kdc-dir", required=True, help="directory of tests/support/kdc/start-kdc")
    ap.add_argument("-k", help="run only tests whose name contains this")
    args = ap.parse_args()

    env_sh = os.path.join(args.kdc_dir, "env.sh")
    if not os.path.exists(env_sh):
        print("FAIL no realm: %s missing. Run the `kdc` fixture (ctest -L kdc) or "
              "tests/support/kdc/start-kdc %s (packages: tests/support/install-deps kdc)"
              % (env_sh, args.kdc_dir))
        return 1
    if shutil.which("curl") is None or "GSS-API" not in subprocess.run(
            ["curl", "-V"], capture_output=True, text=True).stdout:
        print("FAIL curl with GSS-API support is needed (Debian's curl has it)")
        return 1
    kdc = read_env(env_sh)

    failures = 0
    with tempfile.TemporaryDirectory(prefix="mock-negotiate-") as tmp:
        env = dict(os.environ)
        env.update({k: v for k, v in kdc.items()})
        env["KRB5CCNAME"] = "FILE:" + os.path.join(tmp, "alice.ccache")
        env.pop("KRB5_KTNAME", None)
        env.pop("KRB5_CLIENT_KTNAME", None)
        env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
        kinit = subprocess.run(["kinit", kdc["KCD_USER"]], input=kdc["KCD_USER_PASSWORD"] + "\n",
                               env=env, capture_output=True, text=True, timeout=30)
        if kinit.returncode != 0:
            print("FAIL kinit %s: %s" % (kdc["KCD_USER"], kinit.stderr))
            return 1
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                        "/CN=exchange.lab.test", "-addext", "subjectAltName=DNS:exchange.lab.test",
                        "-keyout", key, "-out", cert],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], check=True,
                             capture_output=True, timeout=30).stdout
        keytab = kdc["KCD_BACKEND_KEYTAB"]
        tls = ["--tls-listen", "127.0.0.1:0", "--cert", cert, "--key", key]
        mocks = {}
        try:
            mocks["req"] = Mock(args.binary, tmp, "req", ["--negotiate-keytab", keytab,
                                                         "--require-negotiate"], env)
            mocks["plain"] = Mock(args.binary, tmp, "plain", ["--negotiate-keytab", keytab,
                                                             "--negotiate-principal",
                                                             kdc["KCD_BACKEND_PRINCIPAL"]], env)
            mocks["wrong"] = Mock(args.binary, tmp, "wrong", ["--negotiate-keytab",
                                                             kdc["KCD_NODELEG_KEYTAB"],
                                                             "--require-negotiate"], env)
            mocks["cb_require"] = Mock(args.binary, tmp, "cb_require",
                                       ["--negotiate-keytab", keytab, "--require-negotiate",
                                        "--channel-bindings", "require"] + tls, env)
            mocks["cb_ignore"] = Mock(args.binary, tmp, "cb_ignore",
                                      ["--negotiate-keytab", keytab, "--require-negotiate",
                                       "--channel-bindings", "ignore"] + tls, env)
            ctx = dict(mocks)
            ctx.update({"env": env, "tmp": tmp, "binary": args.binary, "client": args.client,
                        "cert_sha256": hashlib.sha256(der).digest()})
            for test in TESTS:
                if args.k and args.k not in test.__name__:
                    continue
                t0 = time.monotonic()
                try:
                    test(ctx)
                    print("PASS %-55s %.2fs" % (test.__name__, time.monotonic() - t0), flush=True)
                except Exception as e:  # noqa: BLE001 - report every failure and go on
                    failures += 1
                    print("FAIL %-55s %s" % (test.__name__, e), flush=True)
                    if not isinstance(e, Failure):
                        traceback.print_exc()
        except Failure as e:
            failures += 1
            print("FAIL setup: %s" % e)
        finally:
            for name, m in mocks.items():
                rc = m.stop()
                if rc != 0:
                    failures += 1
                    print("FAIL %s exit code %r on SIGTERM" % (name, rc))
                if failures:
                    with open(m.err_path, "rb") as f:
                        print("--- %s stderr ---\n%s" % (name, f.read().decode(errors="replace")))
    print("%d failure(s)" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

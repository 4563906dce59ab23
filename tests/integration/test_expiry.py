"""A certificate that expires while its connection is kept alive, or while its TLS session can
still be resumed, is refused from then on (403.17): validity is checked for every request, not
only at the handshake."""
import datetime
import os
import socket
import ssl
import subprocess
import time
import unittest

from harness import PKI, Client, ProxyTestCase, client_context, wait_until

LIFETIME = 3  # seconds the short-lived certificate is valid after it is made


def make_short_lived(tmp, upn):
    """A client certificate for `upn` issued by the dev issuing CA, valid for LIFETIME seconds,
    made with `openssl ca` on a private copy of a minimal CA database in tmp."""
    db = os.path.join(tmp, "shortca")
    os.makedirs(os.path.join(db, "certs"), exist_ok=True)
    open(os.path.join(db, "index.txt"), "w").close()
    with open(os.path.join(db, "serial"), "w") as f:
        f.write("5EC0%012X\n" % (int(time.time() * 1000) & 0xFFFFFFFFFFFF))
    now = datetime.datetime.now(datetime.timezone.utc)
    start = (now - datetime.timedelta(hours=1)).strftime("%Y%m%d%H%M%SZ")
    end = (now + datetime.timedelta(seconds=LIFETIME)).strftime("%Y%m%d%H%M%SZ")
    cnf = os.path.join(db, "ca.cnf")
    with open(cnf, "w") as f:
        f.write(f"""[ca]
default_ca = short
[short]
dir = {db}
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir/certs
certificate = {PKI}/ca/issuing.pem
private_key = {PKI}/ca/issuing.key
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
[ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = otherName:1.3.6.1.4.1.311.20.2.3;UTF8:{upn}
""")
    key = os.path.join(tmp, "short.key")
    csr = os.path.join(tmp, "short.csr")
    crt = os.path.join(tmp, "short.pem")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-subj", "/CN=Short Lived", "-out", csr],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "ca", "-batch", "-config", cnf, "-in", csr, "-out", crt, "-notext",
                    "-startdate", start, "-enddate", end, "-extensions", "ext"],
                   check=True, capture_output=True)
    chain = os.path.join(tmp, "short-chain.pem")
    with open(chain, "w") as out:
        for part in (crt, os.path.join(PKI, "ca", "issuing.pem")):
            with open(part) as f:
                out.write(f.read())
    return chain, key, time.time() + LIFETIME


def raw_get(tls_sock, path):
    tls_sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls_sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = tls_sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(head.split(b" ")[1]), rest


class ExpiryDuringConnection(ProxyTestCase):
    def test_kept_alive_connection_and_resumed_session_stop_at_not_after(self):
        chain, key, expires = make_short_lived(self.tmp, "shorty@lab.test")
        ctx = client_context(None)
        ctx.load_cert_chain(chain, key)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is available right away
        m1 = self.mark()
        with socket.create_connection((self.proxy.host, self.proxy.port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                status, _ = raw_get(t, "/owa/?marker=" + m1)
                self.assertEqual(status, 200)
                self.assertEqual(self.backend_saw(m1)[0]["identity"], "shorty@lab.test")
                session = t.session
                # Wait for the wall clock to pass notAfter (bounded: LIFETIME plus a margin).
                wait_until(lambda: time.time() > expires + 1.1, timeout=LIFETIME + 5,
                           what="the certificate's notAfter")
                m2 = self.mark()
                status, body = raw_get(t, "/owa/?marker=" + m2)
                self.assertEqual(status, 403)
                self.assertIn(b"403.17", body)
                self.assertNotForwarded(m2)
        # A resumed session carries the identity of its full handshake, and the same check.
        m3 = self.mark()
        with socket.create_connection((self.proxy.host, self.proxy.port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="localhost", session=session) as t:
                self.assertTrue(t.session_reused)
                status, body = raw_get(t, "/owa/?marker=" + m3)
                self.assertEqual(status, 403)
                self.assertIn(b"403.17", body)
                self.assertNotForwarded(m3)


if __name__ == "__main__":
    unittest.main()

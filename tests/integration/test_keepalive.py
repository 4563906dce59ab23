"""Keep-alive on both sides: one client connection carries many requests over a pooled backend
connection; policy refusals keep the connection, malformed requests close it; HTTP/1.0 and
Connection: close are honoured; pipelined requests are answered in order; a backend error
status does not break the client connection."""
import hashlib
import socket
import ssl
import unittest

from harness import Client, ProxyTestCase, RawClient, client_context


def get_line(target, extra="", version="1.1"):
    return f"GET {target} HTTP/{version}\r\nHost: localhost\r\n{extra}\r\n".encode()


class KeepAlive(ProxyTestCase):
    def test_sequential_requests_share_client_and_backend_connections(self):
        c = Client(self.proxy, "alice")
        markers = []
        try:
            sock = None
            for i in range(5):
                m = self.mark()
                markers.append(m)
                r = c.request("GET", f"/owa/?marker={m}")
                self.assertEqual(r.status, 200, r)
                if sock is None:
                    sock = c.sock
                # http.client reconnects silently when the server closed: the socket object
                # staying the same proves the client connection was kept.
                self.assertIs(c.sock, sock, f"client connection replaced before request {i}")
        finally:
            c.close()
        seen = [self.backend_saw(m) for m in markers]
        self.assertTrue(all(len(s) == 1 for s in seen), seen)
        upstream_ids = {s[0]["connection"] for s in seen}
        self.assertEqual(len(upstream_ids), 1, f"backend connections: {upstream_ids}")
        conn_ids = {self.proxy_logged(m)["conn_id"] for m in markers}
        self.assertEqual(len(conn_ids), 1)

    def test_get_refusal_keeps_the_connection(self):
        c = RawClient(self.proxy, cert=None)
        try:
            m1 = self.mark()
            c.send(get_line(f"/owa/?marker={m1}"))
            r = c.read_response()
            self.assertEqual(r.status, 403, r)
            self.assertIn(b"403.7", r.body)
            self.assertNotEqual((r.header("Connection") or "").lower(), "close")
            m2 = self.mark()
            c.send(get_line(f"/owax?marker={m2}"))
            r = c.read_response()
            self.assertEqual(r.status, 404, r)
            m3 = self.mark()
            c.send(get_line(f"/public/x?marker={m3}"))
            r = c.read_response()
            self.assertNotIn(r.status, (400, 403), r)
            self.assertEqual(len(self.backend_saw(m3)), 1)
        finally:
            c.close()
        self.assertNotForwarded(m1)
        self.assertNotForwarded(m2)

    def test_400_closes_the_connection(self):
        c = RawClient(self.proxy, "alice")
        try:
            m = self.mark()
            c.send(get_line(f"/owa/?marker={m}"))
            self.assertEqual(c.read_response().status, 200)
            c.send(get_line("/public/..%2fowa/"))
            r = c.read_response()
            self.assertEqual(r.status, 400, r)
            self.assertEqual((r.header("Connection") or "").lower(), "close")
            self.assertTrue(c.closed_by_peer(), "connection still open after a 400")
        finally:
            c.close()

    def test_http_1_0_without_keep_alive_closes_after_the_response(self):
        c = RawClient(self.proxy, "alice")
        try:
            m = self.mark()
            c.send(get_line(f"/mock/bytes/1000?marker={m}", version="1.0"))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertNotIn("chunked", (r.header("Transfer-Encoding") or "").lower(),
                             "chunked coding sent to an HTTP/1.0 client")
            self.assertEqual(len(r.body), 1000)
            self.assertTrue(c.closed_by_peer(), "HTTP/1.0 connection kept open")
        finally:
            c.close()
        self.assertEqual(self.backend_saw(m)[0]["path"], "/mock/bytes/1000")

    def test_http_1_0_chunked_backend_body_is_close_delimited(self):
        c = RawClient(self.proxy, "alice")
        try:
            c.send(get_line("/mock/chunked/3000", version="1.0"))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertNotIn("chunked", (r.header("Transfer-Encoding") or "").lower())
            self.assertEqual(r.body, bytes(ord("a") + i % 26 for i in range(3000)))
            self.assertTrue(c.eof or c.closed_by_peer())
        finally:
            c.close()

    def test_http_1_0_with_keep_alive_stays_open(self):
        c = RawClient(self.proxy, "alice")
        try:
            for _ in range(2):
                c.send(get_line("/mock/bytes/10", "Connection: keep-alive\r\n", version="1.0"))
                r = c.read_response()
                self.assertEqual(r.status, 200, r)
                self.assertEqual(len(r.body), 10)
            self.assertFalse(c.closed_by_peer(timeout=0.5))
        finally:
            c.close()

    def test_connection_close_is_honoured(self):
        c = RawClient(self.proxy, "alice")
        try:
            m = self.mark()
            c.send(get_line(f"/owa/?marker={m}", "Connection: close\r\n"))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual((r.header("Connection") or "").lower(), "close")
            self.assertTrue(c.closed_by_peer(), "connection kept open after Connection: close")
        finally:
            c.close()
        self.assertEqual(len(self.backend_saw(m)), 1)

    def test_pipelined_requests_are_answered_in_order(self):
        c = RawClient(self.proxy, "alice")
        try:
            m1, m2, m3 = self.mark(), self.mark(), self.mark()
            c.send(get_line(f"/mock/bytes/7?marker={m1}") + get_line(f"/mock/status/201?marker={m2}")
                   + get_line(f"/owa/?marker={m3}", "Connection: close\r\n"))
            r1 = c.read_response()
            r2 = c.read_response()
            r3 = c.read_response()
            self.assertEqual((r1.status, len(r1.body)), (200, 7), r1)
            self.assertEqual(r2.status, 201, r2)
            self.assertEqual(r3.status, 200, r3)
            self.assertTrue(c.closed_by_peer())
        finally:
            c.close()
        ids = [self.backend_saw(m)[0]["id"] for m in (m1, m2, m3)]
        self.assertEqual(ids, sorted(ids))

    def finish_handshake_with_fin(self, after=b""):
        """A TLS handshake driven through memory BIOs, so that the client's last flight
        (Certificate, CertificateVerify, Finished), `after` and the client's FIN leave in one
        TCP segment (TCP_CORK holds the bytes, the shutdown appends the FIN): the proxy reads
        the last handshake bytes and the end of the stream from one readiness event. Returns
        (raw socket, TLS object, incoming BIO)."""
        ctx = client_context("alice")
        raw = socket.create_connection((self.proxy.host, self.proxy.port), timeout=10)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(inc, out, server_hostname="localhost")
        for _ in range(20):  # a handshake is two round trips
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out.pending:
                    raw.sendall(out.read())
                chunk = raw.recv(65536)
                self.assertTrue(chunk, "the proxy closed during the handshake")
                inc.write(chunk)
        if after:
            tls.write(after)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        raw.sendall(out.read())
        raw.shutdown(socket.SHUT_WR)
        return raw, tls, inc

    def closed_within(self, raw, tls, inc, seconds=10):
        """The proxy's bytes until it closes (b"" each time it has nothing more): (decrypted
        bytes, whether it closed within `seconds`)."""
        raw.settimeout(seconds)
        got = b""
        try:
            while True:
                chunk = raw.recv(65536)
                if not chunk:
                    break
                inc.write(chunk)
                try:
                    while True:
                        got += tls.read(65536)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    pass
        except socket.timeout:
            return got, False
        except ConnectionResetError:
            pass
        return got, True

    def test_a_client_that_closes_with_its_last_handshake_bytes_is_closed_at_once(self):
        # A read that returned bytes is no proof that the socket is drained: the FIN that came
        # with them raises no second event (edge-triggered epoll), and a connection that waited
        # for one would stay open until timeouts.idle (120 s here). s_time -new does exactly
        # this: its handshake, then close.
        raw, tls, inc = self.finish_handshake_with_fin()
        try:
            _, closed = self.closed_within(raw, tls, inc)
            self.assertTrue(closed, "connection left open after the client's FIN")
        finally:
            raw.close()

    def test_a_request_that_comes_with_the_clients_fin_ends_the_connection_at_once(self):
        # The client's FIN with its request: the proxy may answer it (the backend was quick) or
        # count the client gone (499: a phone dropping its Ping), but it never keeps the
        # connection open.
        m = self.mark()
        raw, tls, inc = self.finish_handshake_with_fin(get_line(f"/owa/?marker={m}"))
        try:
            got, closed = self.closed_within(raw, tls, inc)
            self.assertTrue(closed, "connection left open after the client's FIN")
            if got:
                self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got[:200])
        finally:
            raw.close()

    def test_pipelined_posts_reach_the_backend_byte_exact(self):
        # Small bodies that come with their header leave with it in one write (issue 14); a body
        # over one relay chunk (16 KiB), or one still on its way, is streamed. Either way each
        # body reaches the backend whole and unchanged, and the bytes after it are the next
        # request, on the same backend connection.
        c = RawClient(self.proxy, "alice")
        bodies = [b"\x03\x01j\x00" * 50, bytes(range(256)) * 64, b"y" * 16385, b"z" * 300]
        marks = [self.mark() for _ in bodies]
        try:
            reqs = [f"POST /Microsoft-Server-ActiveSync?Cmd=SendMail&User=alice&DeviceId=ka"
                    f"&DeviceType=Y&marker={m} HTTP/1.1\r\n"
                    f"Host: localhost\r\nContent-Type: message/rfc822\r\n"
                    f"Content-Length: {len(b)}\r\n\r\n".encode() + b
                    for m, b in zip(marks, bodies)]
            c.send(reqs[0] + reqs[1] + reqs[2])  # three at once, the third over 16 KiB
            rs = [c.read_response() for _ in range(3)]
            c.send(reqs[3][:-100])  # the last body in two pieces
            c.send(reqs[3][-100:])
            rs.append(c.read_response())
            self.assertEqual([r.status for r in rs], [200] * 4, rs)
        finally:
            c.close()
        seen = [self.backend_saw(m)[0] for m in marks]
        self.assertEqual([(s["body_bytes"], s["body_sha256"]) for s in seen],
                         [(len(b), hashlib.sha256(b).hexdigest()) for b in bodies])
        self.assertEqual(len({s["connection"] for s in seen}), 1, seen)

    def test_backend_500_keeps_the_client_connection(self):
        c = RawClient(self.proxy, "alice")
        try:
            m1 = self.mark()
            c.send(get_line(f"/mock/status/500?marker={m1}"))
            r = c.read_response()
            self.assertEqual(r.status, 500, r)
            m2 = self.mark()
            c.send(get_line(f"/owa/?marker={m2}"))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
        finally:
            c.close()
        self.assertEqual(len(self.backend_saw(m1)), 1)
        self.assertEqual(len(self.backend_saw(m2)), 1)


if __name__ == "__main__":
    unittest.main()

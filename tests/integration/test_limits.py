"""Limits and timeouts: header bytes, field count, target length, route body size, slow
clients, idle keep-alive connections, held requests, and bounded memory for large uploads.

Every limit is checked on both sides of its boundary, with what the client gets (status, and
whether the connection is closed) and what the backend got (nothing, or nothing past the limit).
Times are measured, never slept: a deadline is asserted as "closed within N seconds".
"""
import hashlib
import time
import unittest

from harness import ProxyTestCase, RawClient, rss_kib, sanitized_build, tsan_build, wait_until

HEADER_LIMIT = 8192
FIELD_LIMIT = 20
TARGET_LIMIT = 1024
BODY_LIMIT = 1000


def vm_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def get(target, extra=b"", version=b"1.1"):
    return (b"GET " + target + b" HTTP/" + version + b"\r\nHost: localhost\r\n" + extra + b"\r\n")


def sized_get(target, total):
    """A GET whose whole header block (request line .. empty line) is exactly `total` bytes,
    padded with a Cookie field."""
    base = get(target, b"Cookie: x=\r\n")
    pad = total - len(base)
    assert pad >= 0
    return get(target, b"Cookie: x=" + b"a" * pad + b"\r\n")


def chunked(*parts):
    return b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


class LimitTestCase(ProxyTestCase):
    def exchange(self, data, close_timeout=5):
        """Sends data on a fresh connection: (first response or None if the connection closed
        first, whether the proxy closed the connection afterwards, the client address)."""
        c = RawClient(self.proxy, timeout=10)
        try:
            client = c.client
            c.send(data)
            try:
                r = c.read_response()
            except EOFError:
                return None, True, client
            return r, c.closed_by_peer(close_timeout), client
        finally:
            c.close()

    def assert_backend_never_saw(self, marker):
        found = [r for r in self.mock.requests() if marker in (r.get("target") or "")]
        self.assertEqual(found, [], f"{marker} reached the backend")


class HeaderLimits(LimitTestCase):
    PROXY_SECTIONS = {"limits": {"max_request_header_bytes": HEADER_LIMIT,
                                 "max_header_fields": FIELD_LIMIT,
                                 "max_target_bytes": TARGET_LIMIT}}

    def test_header_over_the_limit_is_431_not_forwarded_and_closed(self):
        m = self.mark()
        data = get(b"/owa/?marker=" + m.encode(), b"Cookie: x=" + b"a" * 9000 + b"\r\n")
        r, closed, client = self.exchange(data)
        self.assertIsNotNone(r, "the proxy closed without a 431")
        self.assertEqual(r.status, 431, r)
        self.assertTrue(closed)
        rec = self.proxy_logged_client(client)[0]
        self.assertEqual(rec["status"], 431)
        self.assertEqual(rec["error"], "header_too_large")
        self.assertEqual(rec["upstream"], "")
        self.assert_backend_never_saw(m)

    def test_header_one_byte_over_the_limit_is_431(self):
        m = self.mark()
        r, closed, client = self.exchange(sized_get(b"/owa/?marker=" + m.encode(), HEADER_LIMIT + 1))
        self.assertEqual(r.status, 431, r)
        self.assertTrue(closed)
        self.proxy_logged_client(client)
        self.assert_backend_never_saw(m)

    def test_header_just_under_the_limit_passes(self):
        for total in (HEADER_LIMIT - 1, HEADER_LIMIT):
            with self.subTest(total=total):
                m = self.mark()
                data = sized_get(b"/owa/?marker=" + m.encode(), total)
                self.assertEqual(len(data), total)
                r, _, _ = self.exchange(data, close_timeout=0.01)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(len(self.backend_saw(m)), 1)

    def fields(self, m, n):
        """A GET with exactly n header fields (Host included)."""
        extra = b"".join(b"X-F%d: v\r\n" % i for i in range(n - 1))
        return get(b"/owa/?marker=" + m.encode(), extra)

    def test_more_fields_than_the_limit_is_431(self):
        # FIELD_LIMIT + 1, and more than the built-in default of 100 (the configured limit,
        # not the default, is the one in force, and the status is 431 either way).
        for n in (FIELD_LIMIT + 1, 150):
            with self.subTest(fields=n):
                m = self.mark()
                r, closed, client = self.exchange(self.fields(m, n))
                self.assertEqual(r.status, 431, r)
                self.assertTrue(closed)
                rec = self.proxy_logged_client(client)[0]
                self.assertEqual(rec["status"], 431)
                self.assertIn("too_many_fields", rec["error"])
                self.assert_backend_never_saw(m)

    def test_fields_at_the_limit_pass(self):
        m = self.mark()
        r, _, _ = self.exchange(self.fields(m, FIELD_LIMIT), close_timeout=0.01)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.backend_saw(m)), 1)

    def target(self, m, length):
        t = b"/owa/?marker=" + m.encode() + b"&pad="
        return t + b"p" * (length - len(t))

    def test_target_over_the_limit_is_414(self):
        # local_reply.cpp: uri_too_long (414) is the answer to a target over max_target_bytes.
        for length in (TARGET_LIMIT + 1, 4000):
            with self.subTest(length=length):
                m = self.mark()
                t = self.target(m, length)
                self.assertEqual(len(t), length)
                r, closed, client = self.exchange(get(t))
                self.assertEqual(r.status, 414, r)
                self.assertTrue(closed)
                rec = self.proxy_logged_client(client)[0]
                self.assertEqual(rec["status"], 414)
                self.assertEqual(rec["upstream"], "")
                self.assert_backend_never_saw(m)

    def test_target_at_the_limit_passes(self):
        m = self.mark()
        r, _, _ = self.exchange(get(self.target(m, TARGET_LIMIT)), close_timeout=0.01)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.backend_saw(m)), 1)

    def test_header_sent_slowly_over_the_limit_is_431(self):
        # The limit holds however the bytes arrive: here in many small TLS records.
        m = self.mark()
        data = get(b"/owa/?marker=" + m.encode(), b"Cookie: x=" + b"a" * 9000 + b"\r\n")
        c = RawClient(self.proxy, timeout=10)
        try:
            client = c.client
            try:
                for i in range(0, len(data), 700):
                    c.send(data[i:i + 700])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the proxy may refuse before the last piece
            r = c.read_response()
            self.assertEqual(r.status, 431, r)
            self.assertTrue(c.closed_by_peer(5))
        finally:
            c.close()
        self.proxy_logged_client(client)
        self.assert_backend_never_saw(m)


class BodyLimits(LimitTestCase):
    ROUTES = [
        {"prefix": "/owa", "client_cert": "require"},
        {"prefix": "/mock", "client_cert": "optional"},
        {"prefix": "/mock/echo", "client_cert": "optional", "max_body_bytes": BODY_LIMIT},
    ]

    def post(self, m, framing, body):
        return (b"POST /mock/echo?marker=" + m.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
                + framing + b"\r\n" + body)

    def test_content_length_over_the_route_limit_is_413_not_forwarded(self):
        m = self.mark()
        r, closed, _ = self.exchange(self.post(m, b"Content-Length: %d\r\n" % (BODY_LIMIT + 1),
                                               b"z" * (BODY_LIMIT + 1)))
        self.assertEqual(r.status, 413, r)
        self.assertTrue(closed)
        rec = self.proxy_logged(m)
        self.assertEqual(rec["status"], 413)
        self.assertEqual(rec["error"], "body_too_large")
        self.assertEqual(rec["upstream"], "")
        self.assert_backend_never_saw(m)

    def test_content_length_at_the_route_limit_passes(self):
        m = self.mark()
        body = b"z" * BODY_LIMIT
        r, _, _ = self.exchange(self.post(m, b"Content-Length: %d\r\n" % len(body), body),
                                close_timeout=0.01)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, body)
        self.assertEqual(self.backend_saw(m)[0]["body_bytes"], BODY_LIMIT)

    def test_chunked_body_over_the_route_limit_is_413_and_nothing_past_it_is_forwarded(self):
        for sizes in ((300,) * 5, (BODY_LIMIT + 1,), (999, 1, 1), (20000,)):
            with self.subTest(chunks=sizes):
                m = self.mark()
                c = RawClient(self.proxy, timeout=10)
                try:
                    c.send(self.post(m, b"Transfer-Encoding: chunked\r\n", b""))
                    try:
                        for n in sizes:  # chunk by chunk: the proxy may relay the first ones
                            c.send(b"%x\r\n" % n + b"q" * n + b"\r\n")
                        c.send(b"0\r\n\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    r = c.read_response()
                    # The response cannot have started before the body was read (the backend
                    # answers after the body), so the client gets its 413.
                    self.assertEqual(r.status, 413, r)
                    self.assertTrue(c.closed_by_peer(5))
                finally:
                    c.close()
                rec = self.proxy_logged(m)
                self.assertEqual(rec["status"], 413)
                self.assertEqual(rec["error"], "body_too_large")
                for seen in self.backend_saw(m):
                    self.assertLessEqual(seen["body_bytes"], BODY_LIMIT, seen)
                    self.assertFalse(seen["body_complete"], seen)

    def test_chunked_body_at_the_route_limit_passes(self):
        m = self.mark()
        parts = [b"a" * 400, b"b" * 400, b"c" * 200]
        r, _, _ = self.exchange(self.post(m, b"Transfer-Encoding: chunked\r\n", chunked(*parts)),
                                close_timeout=0.01)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"".join(parts))
        seen = self.backend_saw(m)[0]
        self.assertEqual(seen["body_bytes"], BODY_LIMIT)
        self.assertTrue(seen["body_complete"])

    def test_other_routes_keep_the_global_limit(self):
        # /mock/status is on /mock (no max_body_bytes): a body 10x the /mock/echo limit passes.
        m = self.mark()
        body = b"y" * (BODY_LIMIT * 10)
        r, _, _ = self.exchange(b"POST /mock/status/200?marker=" + m.encode() +
                                b" HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(body)
                                + body, close_timeout=0.01)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.backend_saw(m)[0]["body_bytes"], len(body))


class Timeouts(LimitTestCase):
    PROXY_SECTIONS = {"timeouts": {"request_header": 1, "idle": 1}}
    ROUTES = [
        {"prefix": "/owa", "client_cert": "require"},
        {"prefix": "/mock", "client_cert": "optional"},
        {"prefix": "/mock/slow-headers", "client_cert": "optional", "response_timeout": 1},
    ]

    def wait_closed(self, c, limit):
        """Seconds until the proxy closes c (EOF); fails if it is still open after `limit`.
        Returns (elapsed, bytes received before the close)."""
        t0 = time.monotonic()
        got = b""
        c.sock.settimeout(limit)
        while True:
            try:
                b = c.sock.recv(65536)
            except TimeoutError:
                self.fail(f"the proxy kept the connection open for {limit} s")
            except (OSError, ConnectionResetError):
                b = b""
            if not b:
                return time.monotonic() - t0, got
            got += b
            if time.monotonic() - t0 > limit:
                self.fail(f"the proxy kept the connection open for {limit} s")

    def test_half_a_request_header_is_cut_off_by_the_header_timeout(self):
        m = self.mark()
        c = RawClient(self.proxy)
        try:
            client = c.client
            c.send(b"GET /owa/?marker=" + m.encode() + b" HTTP/1.1\r\nHost: loc")
            elapsed, got = self.wait_closed(c, 5)
        finally:
            c.close()
        self.assertGreater(elapsed, 0.5, "closed before the header timeout")
        if got:
            self.assertTrue(got.startswith(b"HTTP/1.1 408 "), got)
        rec = self.proxy_logged_client(client)[0]
        self.assertEqual(rec["status"], 408)
        self.assertEqual(rec["error"], "request_header_timeout")
        self.assert_backend_never_saw(m)

    def test_a_header_trickled_byte_by_byte_cannot_extend_the_header_timeout(self):
        # Slow loris: one byte every 0.2 s. Each read resets a per-read timer; the header
        # deadline (1 s here) must count from the first byte, whatever comes after.
        m = self.mark()
        data = b"GET /owa/?marker=" + m.encode() + b" HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"s" * 200
        c = RawClient(self.proxy)
        closed_after = None
        try:
            client = c.client
            t0 = time.monotonic()
            for i in range(len(data)):
                try:
                    c.send(data[i:i + 1])
                except (BrokenPipeError, ConnectionResetError, OSError):
                    closed_after = time.monotonic() - t0
                    break
                # The pace: wait up to 0.2 s for the proxy to answer or close. (A read with a
                # timeout, not select(): TLS 1.3 session tickets make the socket readable
                # without any application data.)
                c.sock.settimeout(0.2)
                try:
                    b = c.sock.recv(65536)
                except TimeoutError:
                    b = None
                except OSError:
                    b = b""
                if b is not None and (not b or b.startswith(b"HTTP/1.1 408")):
                    closed_after = time.monotonic() - t0
                    break
                if time.monotonic() - t0 > 8:
                    break
        finally:
            c.close()
        self.assertIsNotNone(closed_after, "a trickling client kept its header open for 8 s")
        self.assertLess(closed_after, 3.0)
        self.assertEqual(self.proxy_logged_client(client)[0]["status"], 408)
        self.assert_backend_never_saw(m)

    def test_an_idle_keep_alive_connection_is_closed_by_the_idle_timeout(self):
        m = self.mark()
        c = RawClient(self.proxy)
        try:
            c.send(get(b"/owa/?marker=" + m.encode()))
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertNotEqual((r.header("Connection") or "").lower(), "close")
            elapsed, got = self.wait_closed(c, 5)
        finally:
            c.close()
        self.assertEqual(got, b"", "an idle close sends no response")
        self.assertGreater(elapsed, 0.5, "the connection was not kept alive")

    def test_a_connection_that_never_sends_is_closed_by_the_idle_timeout(self):
        c = RawClient(self.proxy)
        try:
            elapsed, got = self.wait_closed(c, 5)
        finally:
            c.close()
        self.assertEqual(got, b"")
        self.assertGreater(elapsed, 0.5)

    def test_a_response_slower_than_the_route_timeout_is_504(self):
        m = self.mark()
        c = RawClient(self.proxy)
        t0 = time.monotonic()
        try:
            c.send(get(b"/mock/slow-headers/3000?marker=" + m.encode()))
            r = c.read_response()
        finally:
            c.close()
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 504, r)
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 2.8, "the route's response_timeout (1 s) was not applied")
        rec = self.proxy_logged(m)
        self.assertEqual(rec["status"], 504)
        self.assertEqual(rec["error"], "upstream_timeout")
        self.assertEqual(rec["route"], "/mock/slow-headers")

    def test_a_response_within_the_route_timeout_passes(self):
        m = self.mark()
        c = RawClient(self.proxy)
        try:
            c.send(get(b"/mock/slow-headers/200?marker=" + m.encode()))
            r = c.read_response()
        finally:
            c.close()
        self.assertEqual(r.status, 200, r)


class UploadMemory(LimitTestCase):
    """A 20 MB upload streams through bounded buffers: the proxy's peak RSS barely moves."""
    PROXY_SECTIONS = {"limits": {"read_ahead_bytes": 16384}}
    SIZE = 20 * 1024 * 1024

    def upload(self, size):
        m = self.mark()
        block = hashlib.sha256(m.encode()).digest() * 8192  # 256 KiB, not all one byte
        sha = hashlib.sha256()
        c = RawClient(self.proxy, timeout=30)
        try:
            c.send(b"POST /mock/status/200?marker=" + m.encode() +
                   b" HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % size)
            sent = 0
            while sent < size:
                piece = block[:min(len(block), size - sent)]
                c.send(piece)
                sha.update(piece)
                sent += len(piece)
            r = c.read_response()
        finally:
            c.close()
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(m)[0]
        self.assertEqual(seen["body_bytes"], size)
        self.assertEqual(seen["body_sha256"], sha.hexdigest())

    def test_a_20_mb_upload_does_not_grow_the_proxy(self):
        pid = self.proxy.process.pid
        # Warm up both I/O threads (buffers, TLS, allocator arenas) with smaller uploads.
        for _ in range(4):
            self.upload(2 * 1024 * 1024)
        rss0, hwm0 = rss_kib(pid), vm_kib(pid, "VmHWM")
        self.upload(self.SIZE)
        rss1, hwm1 = rss_kib(pid), vm_kib(pid, "VmHWM")
        if tsan_build():
            # Alone this grows < 100 KiB under TSan too; beside other tests it once grew 4184 KiB:
            # TSan's shadow memory and per-thread access history fill as each thread works, so
            # the figure depends on which I/O thread the warm-up ran on, not on our buffers.
            self.skipTest(f"memory bound not asserted under ThreadSanitizer: its shadow memory and "
                          f"per-thread history grow with the work each thread has done (peak RSS "
                          f"grew {hwm1 - hwm0} KiB); the 20 MB upload itself passed")
        # VmHWM is the peak: it also catches memory that was held during the upload and
        # given back afterwards.
        if not sanitized_build():  # ASan's quarantine holds freed memory
            self.assertLess(hwm1 - hwm0, 4096, f"peak RSS grew {hwm1 - hwm0} KiB (rss {rss0} -> {rss1})")
        if not sanitized_build():
            self.assertLess(rss1 - rss0, 4096, f"RSS grew {rss1 - rss0} KiB")


if __name__ == "__main__":
    unittest.main()

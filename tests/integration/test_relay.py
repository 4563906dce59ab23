"""Streaming relay through the proxy: 50 MB uploads (Content-Length and chunked) and a 50 MB
download arrive complete with bounded proxy memory; chunked and long-poll responses are relayed
chunk by chunk as they come; an ActiveSync Ping is held until the backend answers, and a client
that drops a held Ping is noticed; a backend dying mid-response closes the client connection;
HEAD responses carry no body."""
import hashlib
import os
import threading
import time
import unittest

from harness import (ROUTES_DEFAULT, sanitized_build, Client, ProxyTestCase, RawClient, metric, mock_stats, request, rss_kib,
                     wait_until)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mock-exchange", "fixtures")
EAS = "/Microsoft-Server-ActiveSync"
WBXML = "application/vnd.ms-sync.wbxml"

BIG = 50 * 1024 * 1024
RSS_BUDGET_KIB = 8 * 1024


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def pattern(offset, n):
    """The mock's /mock/bytes and /mock/chunked body bytes [offset, offset + n): 'a' + i % 26."""
    start = offset % 26
    reps = (start + n) // 26 + 1
    return (b"abcdefghijklmnopqrstuvwxyz" * reps)[start:start + n]


def upload_blocks(total, seed):
    """The upload body, generated block by block (never whole in memory): varied block sizes so
    that chunk boundaries do not line up with the proxy's buffers."""
    base = hashlib.sha256(seed.encode()).digest() * 4096  # 128 KiB of varied bytes
    sent, i = 0, 0
    sizes = (1 << 20, 65537, 300001, 4093, 1 << 19)
    while sent < total:
        n = min(sizes[i % len(sizes)], total - sent)
        reps = n // len(base) + 1
        block = (bytes([i % 251]) + base * reps)[:n]
        yield block
        sent += n
        i += 1


class Base(ProxyTestCase):
    def mark(self):
        # A terminator, so that marker x1 is no substring of marker x12 (records are found by
        # substring).
        return super().mark() + "z"


class RssSampler:
    """Samples the proxy's VmRSS every few milliseconds in a thread; reports the peak."""

    def __init__(self, pid):
        self.pid = pid
        self.before = rss_kib(pid)
        self.peak = self.before
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self.samples += 1
            self._stop.wait(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self.after = rss_kib(self.pid)
        self.peak = max(self.peak, self.after)

    def growth(self):
        return self.peak - self.before

    def __repr__(self):
        return (f"VmRSS before={self.before} KiB peak={self.peak} KiB after={self.after} KiB "
                f"({self.samples} samples)")


def read_head(c):
    """Status line and header fields of the next response on a RawClient."""
    return c.read_response(head=True)


class Relay(Base):
    MOCK_ARGS = ("--owa-frames", "3", "--owa-frame-interval-ms", "700")

    def sendmail_target(self, marker, device="relay"):
        return (f"{EAS}?Cmd=SendMail&User=alice&DeviceId={device}&DeviceType=Y&marker={marker}")

    def warm_up(self):
        """One small upload and download first, so that one-time allocations (TLS state, the
        backend connection, buffers of both I/O threads) are not counted as growth."""
        for _ in range(4):
            r = request(self.proxy, "POST", self.sendmail_target(self.mark(), "warm"),
                        body=b"x" * 300000, headers=[("Content-Type", "message/rfc822")])
            self.assertEqual(r.status, 200, r)
            r = request(self.proxy, "GET", "/mock/bytes/300000")
            self.assertEqual(r.status, 200, r)

    def upload(self, chunked):
        self.warm_up()
        m = self.mark()
        digest = hashlib.sha256()
        c = RawClient(self.proxy, "alice", timeout=60)
        try:
            framing = ("Transfer-Encoding: chunked" if chunked else f"Content-Length: {BIG}")
            with RssSampler(self.proxy.process.pid) as rss:
                c.send((f"POST {self.sendmail_target(m)} HTTP/1.1\r\nHost: localhost\r\n"
                        f"Content-Type: message/rfc822\r\n{framing}\r\n\r\n").encode())
                for block in upload_blocks(BIG, m):
                    digest.update(block)
                    if chunked:
                        c.send(b"%x\r\n" % len(block) + block + b"\r\n")
                    else:
                        c.send(block)
                if chunked:
                    c.send(b"0\r\n\r\n")
                r = c.read_response()
        finally:
            c.close()
        self.assertEqual(r.status, 200, r)
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["body_bytes"], BIG)
        self.assertEqual(seen[0]["body_sha256"], digest.hexdigest())
        self.assertTrue(seen[0]["body_complete"])
        if chunked:
            self.assertIn("chunked", ",".join(seen[0]["headers"].get("Transfer-Encoding", [])).lower())
        else:
            self.assertEqual(seen[0]["headers"].get("Content-Length"), [str(BIG)])
        self.assertGreater(rss.samples, 10, rss)
        if not sanitized_build():  # ASan's quarantine holds freed memory
            self.assertLess(rss.growth(), RSS_BUDGET_KIB, f"proxy memory grew during a 50 MB upload: {rss}")
        rec = self.proxy_logged(m)
        self.assertEqual(rec["status"], 200)
        self.assertEqual(rec["bytes_in"], BIG)

    def test_50mb_upload_content_length_streams_with_bounded_memory(self):
        self.upload(chunked=False)

    def test_50mb_upload_chunked_streams_with_bounded_memory(self):
        self.upload(chunked=True)

    def test_a_client_gone_mid_upload_ends_the_request_and_its_backend_connection(self):
        # The Content-Length body's pieces go through the parser straight from what OpenSSL has
        # at hand; a client that closes before the body's end must still end the exchange as
        # client_closed, and the backend connection that got a cut body must not be reused.
        self.warm_up()
        m = self.mark()
        sent = 600000
        c = RawClient(self.proxy, "alice", timeout=30)
        try:
            c.send((f"POST {self.sendmail_target(m)} HTTP/1.1\r\nHost: localhost\r\n"
                    f"Content-Type: message/rfc822\r\nContent-Length: 2000000\r\n\r\n").encode())
            c.send(b"z" * sent)
        finally:
            c.close()  # no close_notify: a phone out of coverage
        rec = self.proxy_logged(m)
        self.assertEqual(rec["error"], "client_closed", rec)
        self.assertLessEqual(rec["bytes_in"], sent, rec)
        cut = self.backend_saw(m)[0]
        self.assertFalse(cut["body_complete"], cut)
        m2 = self.mark()
        r = request(self.proxy, "POST", self.sendmail_target(m2), body=b"y" * 300000,
                    headers=[("Content-Type", "message/rfc822")])
        self.assertEqual(r.status, 200, r)
        self.assertNotEqual(self.backend_saw(m2)[0]["connection"], cut["connection"])

    def test_50mb_download_streams_with_bounded_memory(self):
        self.warm_up()
        m = self.mark()
        c = RawClient(self.proxy, "alice", timeout=60)
        digest, expected = hashlib.sha256(), hashlib.sha256()
        got = 0
        try:
            with RssSampler(self.proxy.process.pid) as rss:
                c.send(f"GET /mock/bytes/{BIG}?marker={m} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                r = read_head(c)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.header("Content-Length"), str(BIG))
                # Read and hash as it comes: never the whole body in memory, here either.
                while got < BIG:
                    if not c.buf and not c._fill():
                        break
                    piece, c.buf = c.buf[:BIG - got], c.buf[BIG - got:]
                    digest.update(piece)
                    expected.update(pattern(got, len(piece)))
                    got += len(piece)
        finally:
            c.close()
        self.assertEqual(got, BIG, "download incomplete")
        self.assertEqual(digest.hexdigest(), expected.hexdigest(), "download corrupted")
        self.assertGreater(rss.samples, 10, rss)
        if not sanitized_build():  # ASan's quarantine holds freed memory
            self.assertLess(rss.growth(), RSS_BUDGET_KIB, f"proxy memory grew during a 50 MB download: {rss}")
        rec = self.proxy_logged(m)
        self.assertEqual(rec["status"], 200)
        self.assertEqual(rec["bytes_out"], BIG)

    def test_chunked_response_arrives_intact(self):
        for n in (0, 1, 16384, 1000003):
            with self.subTest(n=n):
                c = RawClient(self.proxy, "alice")
                try:
                    c.send(f"GET /mock/chunked/{n} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                    r = c.read_response()
                    # Kept open: the chunked message was complete and well framed.
                    c.send(b"GET /mock/status/204 HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    r2 = c.read_response()
                finally:
                    c.close()
                self.assertEqual(r.status, 200, r)
                self.assertEqual((r.header("Transfer-Encoding") or "").lower(), "chunked")
                self.assertIsNone(r.header("Content-Length"))
                self.assertEqual(len(r.body), n)
                self.assertEqual(r.body, pattern(0, n))
                self.assertEqual(r2.status, 204)

    def test_empty_chunked_upload_keeps_the_backend_connection_in_step(self):
        # A chunked body of only the last chunk, then more requests on the same connections:
        # each must get its own response (a stray "0\r\n\r\n" sent to the backend would be
        # answered with a 400 that the next request would receive).
        c = RawClient(self.proxy, "alice")
        try:
            markers = []
            for i in range(3):
                m = self.mark()
                markers.append(m)
                c.send((f"POST /mock/status/201?marker={m} HTTP/1.1\r\nHost: localhost\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").encode())
                r = c.read_response()
                self.assertEqual(r.status, 201, r)
                m = self.mark()
                markers.append(m)
                c.send(f"GET /mock/status/202?marker={m} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                r = c.read_response()
                self.assertEqual(r.status, 202, r)
        finally:
            c.close()
        for m in markers:
            seen = self.backend_saw(m)
            self.assertEqual(len(seen), 1, m)
            self.assertEqual(seen[0]["body_bytes"], 0)
        bad = [r for r in self.mock.requests() if r.get("method") is None]
        self.assertEqual(bad, [], "the backend received bytes that were not a request")

    def test_owa_long_poll_is_relayed_chunk_by_chunk(self):
        m = self.mark()
        c = RawClient(self.proxy, "alice", timeout=20)
        arrivals = []
        try:
            t0 = time.monotonic()
            c.send(f"GET /owa/ev.owa2?ns=PendingRequest&marker={m} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            r = read_head(c)
            self.assertEqual(r.status, 200, r)
            self.assertEqual((r.header("Transfer-Encoding") or "").lower(), "chunked")
            while True:
                size = int(c._line().split(b";")[0], 16)
                if size == 0:
                    while c._line():
                        pass
                    end = time.monotonic() - t0
                    break
                data = c._exact(size)
                c._exact(2)
                arrivals.append((time.monotonic() - t0, data))
        finally:
            c.close()
        self.assertGreaterEqual(len(arrivals), 3, arrivals)
        # The mock writes a frame every 0.7 s: the first must reach the client long before the
        # response ends (a proxy buffering the whole response would deliver all at the end).
        first = arrivals[0][0]
        self.assertLess(first, end - 1.0, f"first chunk at {first:.2f}s, end at {end:.2f}s")
        self.assertLess(arrivals[1][0], end - 0.4, arrivals)
        self.assertGreater(end, 1.3)

    def test_backend_dying_mid_response_closes_the_client_connection(self):
        m = self.mark()
        c = RawClient(self.proxy, "alice", timeout=10)
        try:
            c.send(f"GET /mock/die-mid-response?marker={m} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            r = read_head(c)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("Content-Length"), "1000")
            with self.assertRaises(EOFError):
                c._exact(1000)
            # At most the 10 bytes the backend sent before dying, then the end of the connection.
            self.assertTrue(b"0123456789".startswith(c.buf), c.buf)
            self.assertTrue(c.eof)
        finally:
            c.close()
        rec = self.proxy_logged(m)
        self.assertEqual(rec["error"], "upstream_reset")
        # The proxy keeps serving: a new connection works.
        m2 = self.mark()
        r = request(self.proxy, "GET", f"/owa/?marker={m2}")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.backend_saw(m2)), 1)

    def test_backend_reset_mid_response_closes_the_client_connection(self):
        m = self.mark()
        c = RawClient(self.proxy, "alice", timeout=10)
        try:
            c.send(f"GET /mock/die-mid-response?rst=1&marker={m} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            try:
                r = read_head(c)
            except EOFError:
                r = None  # the reset may overtake the header: then the client sees nothing
            if r is not None:
                self.assertEqual(r.status, 200, r)
                with self.assertRaises(EOFError):
                    c._exact(1000)
            self.assertTrue(c.eof)
        finally:
            c.close()
        rec = self.proxy_logged(m)
        self.assertEqual(rec["error"], "upstream_reset")
        self.assertEqual(request(self.proxy, "GET", "/owa/").status, 200)

    def test_head_relays_no_body_and_keeps_content_length(self):
        c = RawClient(self.proxy, "alice")
        try:
            for target, length in (("/mock/bytes/12345", "12345"), ("/owa/", None)):
                with self.subTest(target=target):
                    m = self.mark()
                    c.send(f"HEAD {target}?marker={m} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                    r = c.read_response(head=True)
                    self.assertEqual(r.status, 200, r)
                    cl = r.header("Content-Length")
                    self.assertIsNotNone(cl, r.headers)
                    if length:
                        self.assertEqual(cl, length)
                    self.assertGreater(int(cl), 0)
                    self.assertIsNone(r.header("Transfer-Encoding"))
                    # Nothing after the header: the next response on this connection follows
                    # right away (a relayed body would be read as its status line).
                    c.send(b"GET /mock/status/202 HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    r2 = c.read_response()
                    self.assertEqual(r2.status, 202, r2)
                    self.assertEqual(self.backend_saw(m)[0]["method"], "HEAD")
                    self.assertEqual(self.proxy_logged(m)["bytes_out"], 0)
        finally:
            c.close()


class HeldPing(Base):
    """The mock holds a Ping HEARTBEAT_CAP (1) second. The proxy's global response and body
    timeouts are shorter than that, so only the ActiveSync route's response_timeout (3660 s)
    lets the Ping through: a proxy applying the wrong timer would answer 504."""
    HEARTBEAT_CAP = 1
    PROXY_SECTIONS = {"timeouts": {"upstream_response": 0.4, "body_idle": 0.4}}

    def test_ping_is_held_until_the_backend_answers(self):
        m = self.mark()
        c = Client(self.proxy, "alice", timeout=30)
        try:
            t0 = time.monotonic()
            r = c.request("POST", f"{EAS}?Cmd=Ping&User=alice&DeviceId=heldping&DeviceType=Y&marker={m}",
                          body=fixture("ping_req.wbxml"),
                          headers=[("Content-Type", WBXML), ("MS-ASProtocolVersion", "14.1")])
            elapsed = time.monotonic() - t0
        finally:
            c.close()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, fixture("ping_resp_expired.wbxml"))
        self.assertEqual(r.header("Content-Type"), WBXML)
        self.assertGreaterEqual(elapsed, 0.95, "the Ping was not held")
        seen = self.backend_saw(m)
        self.assertEqual(seen[0]["cmd"], "Ping")
        self.assertEqual(seen[0]["body_sha256"], hashlib.sha256(fixture("ping_req.wbxml")).hexdigest())
        rec = self.proxy_logged(m)
        self.assertEqual(rec["status"], 200)
        self.assertEqual(rec.get("error", ""), "")

    def test_global_response_timeout_still_applies_elsewhere(self):
        # The counterpart: the same wait on a route without its own timeout is cut at 0.4 s.
        m = self.mark()
        r = request(self.proxy, "GET", f"/mock/slow-headers/1500?marker={m}")
        self.assertEqual(r.status, 504, r)
        self.assertEqual(self.proxy_logged(m)["error"], "upstream_timeout")


def ping_request(marker, device):
    body = fixture("ping_req.wbxml")
    return (f"POST {EAS}?Cmd=Ping&User=alice&DeviceId={device}&DeviceType=Y&marker={marker} HTTP/1.1\r\n"
            f"Host: localhost\r\nContent-Type: {WBXML}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def parked(proxy):
    return metric(proxy.admin, "cbagate_requests_parked")


class ParkedHold(Base):
    """Requests still unanswered after a second are parked (issue 14): their coroutines end and
    only their waits stay (cbagate_requests_parked counts them). The mock holds a Ping 2 s; a
    route of its own gives /mock/slow-headers a 2 s response timeout."""
    HEARTBEAT_CAP = 2
    ROUTES = ROUTES_DEFAULT + [{"prefix": "/mock/slow-headers", "client_cert": "optional",
                                "response_timeout": 2}]

    def in_thread(self, fn):
        out = {}

        def run():
            try:
                out["value"] = fn()
            except BaseException as e:  # handed to the test thread
                out["error"] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, out

    def test_a_parked_ping_is_answered_and_both_connections_carry_on(self):
        wait_until(lambda: parked(self.proxy) == 0, timeout=10, what="no request parked")
        m1, m2 = self.mark(), self.mark()
        c = RawClient(self.proxy, "alice", timeout=30)
        try:
            c.send(ping_request(m1, "parked"))
            t, out = self.in_thread(c.read_response)
            wait_until(lambda: parked(self.proxy) == 1, timeout=10, what="the Ping parked")
            t.join(timeout=20)
            self.assertNotIn("error", out)
            r = out["value"]
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, fixture("ping_resp_expired.wbxml"))
            self.assertEqual(parked(self.proxy), 0)
            # The same client connection carries the next request, on the same backend
            # connection: the resumed exchange left both in step.
            c.send(f"GET /owa/?marker={m2} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            r2 = c.read_response()
            self.assertEqual(r2.status, 200, r2)
        finally:
            c.close()
        rec1, rec2 = self.proxy_logged(m1), self.proxy_logged(m2)
        self.assertEqual((rec1["status"], rec1.get("error", "")), (200, ""))
        self.assertEqual(rec1["conn_id"], rec2["conn_id"])
        self.assertEqual(self.backend_saw(m1)[0]["connection"], self.backend_saw(m2)[0]["connection"])

    def test_a_parked_request_still_gets_its_response_timeout(self):
        wait_until(lambda: parked(self.proxy) == 0, timeout=10, what="no request parked")
        m = self.mark()
        t, out = self.in_thread(lambda: request(self.proxy, "GET", f"/mock/slow-headers/6000?marker={m}"))
        wait_until(lambda: parked(self.proxy) == 1, timeout=10, what="the request parked")
        t.join(timeout=20)
        self.assertNotIn("error", out)
        self.assertEqual(out["value"].status, 504, out["value"])
        rec = self.proxy_logged(m)
        self.assertEqual(rec["error"], "upstream_timeout")
        self.assertEqual(parked(self.proxy), 0)


class DroppedPing(Base):
    """A Ping held for up to 30 s whose client goes away after the backend started holding it."""
    HEARTBEAT_CAP = 30

    def connections(self):
        return metric(self.proxy.admin, "cbagate_connections_active")

    def test_client_dropping_a_held_ping_is_noticed_and_the_upstream_closed(self):
        wait_until(lambda: self.connections() == 0, timeout=10, what="no client connection open")
        before = self.connections()
        held_before = mock_stats(self.mock)["held"]
        m = self.mark()
        c = RawClient(self.proxy, "alice", timeout=40)
        body = fixture("ping_req.wbxml")
        c.send((f"POST {EAS}?Cmd=Ping&User=alice&DeviceId=dropped&DeviceType=Y&marker={m} HTTP/1.1\r\n"
                f"Host: localhost\r\nContent-Type: {WBXML}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
               + body)
        wait_until(lambda: mock_stats(self.mock)["held"] == held_before + 1, timeout=10,
                   what="the backend holding the Ping")
        self.assertEqual(self.connections(), before + 1)
        t0 = time.monotonic()
        c.close()
        rec = self.proxy_logged(m)
        noticed = time.monotonic() - t0
        self.assertEqual(rec["error"], "client_closed")
        self.assertEqual(rec["status"], 499)
        self.assertLess(noticed, 5, "the proxy noticed the client going away too late")
        # The proxy closed its side to the backend: the mock's hold ends (client_closed) long
        # before its 30 s heartbeat.
        wait_until(lambda: mock_stats(self.mock)["held"] == held_before, timeout=5,
                   what="the backend's held Ping to end")
        seen = self.backend_saw(m)
        wait_until(lambda: (r := self.backend_saw(m)) and r[0].get("ping", {}).get("outcome") == "client_closed",
                   timeout=5, what="the mock to log the hold's end")
        self.assertLess(time.monotonic() - t0, 10)
        del seen
        wait_until(lambda: self.connections() == before, timeout=5,
                   what="cbagate_connections_active back to its earlier value")


    def test_client_dropping_a_parked_ping_is_noticed_and_the_upstream_closed(self):
        wait_until(lambda: self.connections() == 0, timeout=10, what="no client connection open")
        held_before = mock_stats(self.mock)["held"]
        m = self.mark()
        c = RawClient(self.proxy, "alice", timeout=40)
        c.send(ping_request(m, "droppedparked"))
        wait_until(lambda: parked(self.proxy) == 1, timeout=10, what="the Ping parked")
        t0 = time.monotonic()
        c.close()
        rec = self.proxy_logged(m)
        self.assertEqual((rec["status"], rec["error"]), (499, "client_closed"))
        self.assertLess(time.monotonic() - t0, 5, "the proxy noticed the client going away too late")
        self.assertEqual(parked(self.proxy), 0)
        wait_until(lambda: mock_stats(self.mock)["held"] == held_before, timeout=5,
                   what="the backend's held Ping to end")
        wait_until(lambda: self.connections() == 0, timeout=5, what="no client connection open")


if __name__ == "__main__":
    unittest.main()

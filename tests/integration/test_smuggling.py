"""Request smuggling: every framing that two HTTP implementations could read differently is
refused with 400, nothing of it reaches the backend, and the proxy closes the connection so
that the bytes after the refused header (a second, "smuggled" request) are never processed.
Legitimate framing (chunked, Content-Length, Expect: 100-continue, legal whitespace) still
works, byte for byte.

Every request here is sent raw over TLS with alice's certificate (RawClient): http.client
would refuse to send most of them.
"""
import hashlib
import time
import unittest

from harness import ProxyTestCase, RawClient

# The request hidden in the body of a refused one. If the proxy framed the first request
# differently from what it forwards, or went on reading the connection after refusing it,
# this one would reach the backend.
SMUGGLED = b"GET /owa/?smuggled={m2} HTTP/1.1\r\nHost: localhost\r\n\r\n"


def chunked(*parts):
    out = b""
    for p in parts:
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n\r\n"


def head(extra, version=b"1.1", target=b"/owa/?marker={m1}", method=b"POST", host=True):
    """A request header: the request line, Host (unless host=False), `extra` (raw field lines,
    each ending in CRLF), and the empty line."""
    h = method + b" " + target + b" HTTP/" + version + b"\r\n"
    if host:
        h += b"Host: localhost\r\n"
    return h + extra + b"\r\n"


def cl(n):
    return b"Content-Length: %d\r\n" % n


# name -> the raw request ({m1} marks the request, {m2} the smuggled one). Each must be
# refused with 400 before anything is forwarded.
S = SMUGGLED
REFUSED_BEFORE_FORWARDING = {
    # Content-Length next to Transfer-Encoding: CL.TE and TE.CL desync, in both orders.
    "cl_then_te": head(cl(len(b"0\r\n\r\n" + S)) + b"Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n" + S,
    "te_then_cl": head(b"Transfer-Encoding: chunked\r\n" + cl(len(b"0\r\n\r\n" + S))) + b"0\r\n\r\n" + S,
    # Two Content-Length fields: different values, equal values.
    "two_cl_different": head(cl(0) + cl(len(S))) + S,
    "two_cl_equal": head(cl(0) + cl(0)) + S,
    # Content-Length values that some parsers read as a number.
    "cl_plus": head(b"Content-Length: +0\r\n") + S,
    "cl_plus5": head(b"Content-Length: +5\r\n") + b"hello" + S,
    "cl_list5": head(b"Content-Length: 5, 5\r\n") + b"hello" + S,
    "cl_leading_vtab5": head(b"Content-Length:\x0b5\r\n") + b"hello" + S,
    "cl_list": head(b"Content-Length: 0, 0\r\n") + S,
    "cl_list_nospace": head(b"Content-Length: 0,0\r\n") + S,
    "cl_inner_space": head(b"Content-Length: 0 0\r\n") + S,
    "cl_vtab": head(b"Content-Length:\x0b0\r\n") + S,
    "cl_formfeed": head(b"Content-Length: 0\x0c\r\n") + S,
    "cl_nbsp": head(b"Content-Length: \xa00\r\n") + S,
    "cl_hex": head(b"Content-Length: 0x0\r\n") + S,
    "cl_negative": head(b"Content-Length: -1\r\n") + S,
    "cl_empty": head(b"Content-Length: \r\n") + S,
    "cl_overflow": head(b"Content-Length: 99999999999999999999999\r\n") + S,
    # Transfer-Encoding that is not exactly one "chunked".
    "te_chunked_chunked": head(b"Transfer-Encoding: chunked, chunked\r\n") + b"0\r\n\r\n" + S,
    "te_gzip_chunked": head(b"Transfer-Encoding: gzip, chunked\r\n") + b"0\r\n\r\n" + S,
    "te_chunked_gzip": head(b"Transfer-Encoding: chunked, gzip\r\n") + b"0\r\n\r\n" + S,
    "te_identity": head(b"Transfer-Encoding: identity\r\n") + S,
    "te_xchunked": head(b"Transfer-Encoding: xchunked\r\n") + b"0\r\n\r\n" + S,
    "te_chunked_comma": head(b"Transfer-Encoding: chunked,\r\n") + b"0\r\n\r\n" + S,
    "te_two_fields": head(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n") + b"0\r\n\r\n" + S,
    "te_twice_chunked": head(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n") + b"0\r\n\r\n" + S,
    "te_vtab": head(b"Transfer-Encoding: chunked\x0b\r\n") + b"0\r\n\r\n" + S,
    "te_nbsp": head(b"Transfer-Encoding: chunked\xa0\r\n") + b"0\r\n\r\n" + S,
    "te_quoted": head(b'Transfer-Encoding: "chunked"\r\n') + b"0\r\n\r\n" + S,
    "te_in_http10": head(b"Transfer-Encoding:\tchunked\r\n", version=b"1.0") + b"0\r\n\r\n" + S,
    # Line structure.
    "obs_fold": head(b"X-Folded: a\r\n b\r\n" + cl(0)) + S,
    "obs_fold_te": head(b"Transfer-Encoding:\r\n chunked\r\n") + b"0\r\n\r\n" + S,
    "obs_fold_tab": head(b"X-Folded: a\r\n\tchunked\r\n" + cl(0)) + S,
    "nul_in_value": head(b"X-Nul: a\x00b\r\n" + cl(0)) + S,
    "nul_in_name": head(b"X-N\x00ul: a\r\n" + cl(0)) + S,
    "bare_cr_in_value": head(b"X-Cr: a\rTransfer-Encoding: chunked\r\n" + cl(0)) + S,
    "bare_lf_in_field": head(b"X-Lf: a\nTransfer-Encoding: chunked\r\n" + cl(0)) + S,
    "bare_lf_everywhere": (b"POST /owa/?marker={m1} HTTP/1.1\nHost: localhost\nContent-Length: 0\n\n" + S),
    "bare_lf_request_line": b"POST /owa/?marker={m1} HTTP/1.1\nHost: localhost\r\n" + cl(0) + b"\r\n" + S,
    "space_before_colon": head(b"Transfer-Encoding : chunked\r\n") + b"0\r\n\r\n" + S,
    "tab_before_colon": head(b"Content-Length\t: 0\r\n") + S,
    "name_with_paren": head(b"X-Bad(Name): 1\r\n" + cl(0)) + S,
    "name_with_at": head(b"X-Bad@Name: 1\r\n" + cl(0)) + S,
    "name_with_space": head(b"X Bad: 1\r\n" + cl(0)) + S,
    "name_with_del": head(b"Transfer-Encoding\x7f: chunked\r\n") + b"0\r\n\r\n" + S,
    "name_obs_text": head(b"X-\xe9: 1\r\n" + cl(0)) + S,
    "empty_name": head(b": x\r\n" + cl(0)) + S,
    "no_colon": head(b"X-No-Colon\r\n" + cl(0)) + S,
    "ctl_in_value": head(b"X-Ctl: a\x01b\r\n" + cl(0)) + S,
    "del_in_value": head(b"X-Del: a\x7fb\r\n" + cl(0)) + S,
    # Host.
    "two_hosts": head(b"Host: other.example\r\n" + cl(0)) + S,
    "missing_host_11": head(cl(0), host=False) + S,
    "empty_host": head(b"Host:\r\n" + cl(0), host=False) + S,
    "host_with_userinfo": head(b"Host: evil@localhost\r\n" + cl(0), host=False) + S,
    # Target.
    "fragment_in_target": head(cl(0), target=b"/owa/?marker={m1}#frag") + S,
    "fragment_in_path": head(cl(0), target=b"/owa/#x?marker={m1}") + S,
    "leading_empty_line": b"\r\n" + head(cl(0)) + S,
}

# Header accepted, body framing broken: the proxy may already have sent the header to the
# backend (it streams), but the backend never gets a complete request nor the smuggled one,
# and the client gets 400 and a closed connection.
REFUSED_IN_BODY = {
    "chunk_size_not_hex": head(b"Transfer-Encoding: chunked\r\n") + b"zz\r\n" + S + b"\r\n0\r\n\r\n",
    "chunk_size_overflow": (head(b"Transfer-Encoding: chunked\r\n") + b"ffffffffffffffffff\r\n" + S
                            + b"\r\n0\r\n\r\n"),
    "chunk_ext_bare_lf": (head(b"Transfer-Encoding: chunked\r\n") + b"5;ext=a\nb\r\nhello\r\n0\r\n\r\n"
                          + S),
    "chunk_size_bare_lf": head(b"Transfer-Encoding: chunked\r\n") + b"5\nhello\r\n0\r\n\r\n" + S,
    "chunk_data_too_long": head(b"Transfer-Encoding: chunked\r\n") + b"2\r\nhello\r\n0\r\n\r\n" + S,
    "chunk_size_leading_space": head(b"Transfer-Encoding: chunked\r\n") + b" 5\r\nhello\r\n0\r\n\r\n" + S,
}


class Smuggling(ProxyTestCase):
    def fill(self, template):
        m1, m2 = self.mark(), self.mark()
        return template.replace(b"{m1}", m1.encode()).replace(b"{m2}", m2.encode()), m1, m2

    def send_raw(self, data):
        """Sends data on a fresh connection; returns (first response, closed by the proxy,
        this connection's address as the access log names it)."""
        c = RawClient(self.proxy, timeout=10)
        try:
            client = c.client
            c.send(data)
            r = c.read_response()
            closed = c.closed_by_peer(5)
            return r, closed, client
        finally:
            c.close()

    def backend_targets(self, *markers):
        return [r.get("target") for r in self.mock.requests()
                if any(m in (r.get("target") or "") for m in markers)]

    def assert_refused(self, data, m1, m2, forwarded_header=False):
        t0 = time.monotonic()
        r, closed, client = self.send_raw(data)
        self.assertEqual(r.status, 400, r)
        self.assertLess(time.monotonic() - t0, 5, "the refusal must not wait for a timeout")
        self.assertTrue(closed, "the proxy must close the connection after a framing refusal")
        self.assertEqual((r.header("Connection") or "").lower(), "close")
        recs = self.proxy_logged_client(client)
        # Exactly one request was processed on this connection: the smuggled one never was.
        self.assertEqual(len(recs), 1, recs)
        self.assertEqual(recs[0]["status"], 400)
        self.assertTrue(recs[0]["error"], recs[0])
        if not forwarded_header:
            self.assertEqual(recs[0]["upstream"], "", recs[0])
            self.assertEqual(self.backend_targets(m1, m2), [])
        else:
            # The header may have gone to the backend before the body broke; the backend saw
            # no complete request and never the smuggled one.
            self.assertEqual(self.backend_targets(m2), [])
            for rec in self.backend_saw(m1):
                self.assertFalse(rec.get("body_complete"), rec)
                self.assertEqual(rec.get("body_bytes"), 0, rec)
        return recs[0]

    def test_ambiguous_framing_is_refused_before_forwarding(self):
        for name, template in REFUSED_BEFORE_FORWARDING.items():
            with self.subTest(case=name):
                data, m1, m2 = self.fill(template)
                self.assert_refused(data, m1, m2)

    def test_framing_errors_are_logged_with_their_cause(self):
        # (Content-Length next to Transfer-Encoding is refused by Beast's own parser first, as
        # "bad_request_header"; these are the cases the proxy's framing guard names.)
        cases = {"two_cl_equal": "multiple_content_length", "cl_list": "bad_content_length",
                 "te_gzip_chunked": "unsupported_transfer_coding", "obs_fold": "obs_fold",
                 "space_before_colon": "space_before_colon", "bare_lf_everywhere": "bare_lf",
                 "two_hosts": "multiple_host", "missing_host_11": "missing_host",
                 "fragment_in_target": "fragment_in_target", "te_in_http10": "te_in_http10"}
        for name, cause in cases.items():
            with self.subTest(case=name):
                data, m1, m2 = self.fill(REFUSED_BEFORE_FORWARDING[name])
                rec = self.assert_refused(data, m1, m2)
                self.assertIn(cause, rec["error"])

    def test_broken_chunked_body_is_refused_and_nothing_complete_is_forwarded(self):
        for name, template in REFUSED_IN_BODY.items():
            with self.subTest(case=name):
                data, m1, m2 = self.fill(template)
                self.assert_refused(data, m1, m2, forwarded_header=True)

    def test_bare_lf_request_is_refused_without_waiting_for_a_crlf(self):
        # No CRLF CRLF ever comes: the proxy must see the bare LF, not wait for the header
        # timeout (30 s here) and answer 408.
        data, m1, m2 = self.fill(b"GET /owa/?marker={m1} HTTP/1.1\nHost: localhost\n\n")
        self.assert_refused(data, m1, m2)

    # --- legitimate framing still works ---------------------------------------------------------

    def echo(self, header, body_bytes, expect_body):
        m = self.mark()
        c = RawClient(self.proxy, timeout=10)
        try:
            c.send(header.replace(b"{m1}", m.encode()) + body_bytes)
            r = c.read_response()
        finally:
            c.close()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, expect_body)
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["body_sha256"], hashlib.sha256(expect_body).hexdigest())
        self.assertTrue(seen[0]["body_complete"])
        return seen[0]

    def test_chunked_post_arrives_byte_for_byte(self):
        parts = [b"a" * 10, b"b" * 3000, b"c", SMUGGLED.replace(b"{m2}", b"notarequest"),
                 bytes(range(256)) * 100]
        m2 = self.mark()
        parts[3] = SMUGGLED.replace(b"{m2}", m2.encode())
        seen = self.echo(head(b"Transfer-Encoding: chunked\r\n", target=b"/mock/echo?marker={m1}"),
                         chunked(*parts), b"".join(parts))
        self.assertEqual(seen["body_bytes"], sum(len(p) for p in parts))
        # Request text inside a chunk is body, never a request.
        self.assertEqual(self.backend_targets(m2), [])

    def test_chunked_post_with_extension_and_trailer_arrives_byte_for_byte(self):
        body = b"5;name=value\r\nhello\r\n6;q=\"x y\"\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
        self.echo(head(b"Transfer-Encoding: chunked\r\n", target=b"/mock/echo?marker={m1}"), body,
                  b"hello world")

    def test_content_length_post_arrives_byte_for_byte(self):
        body = bytes(range(256)) * 300
        self.echo(head(cl(len(body)), target=b"/mock/echo?marker={m1}"), body, body)

    def test_legal_whitespace_around_values_keeps_one_framing(self):
        # RFC 9112 5: OWS around a field value is not part of it. The proxy must read these
        # exactly as any other implementation does: one request, with this body.
        m2 = self.mark()
        inner = SMUGGLED.replace(b"{m2}", m2.encode())
        for name, extra, body, expect in (
                ("cl_ows", b"Content-Length: \t%d \t\r\n" % len(inner), inner, inner),
                ("te_trailing_space", b"Transfer-Encoding: chunked \r\n", chunked(inner), inner),
                ("te_trailing_tab", b"Transfer-Encoding: chunked\t\r\n", chunked(inner), inner),
                ("te_no_space", b"Transfer-Encoding:chunked\r\n", chunked(inner), inner),
                ("te_upper_case", b"Transfer-Encoding: CHUNKED\r\n", chunked(inner), inner)):
            with self.subTest(case=name):
                self.echo(head(extra, target=b"/mock/echo?marker={m1}"), body, expect)
        self.assertEqual(self.backend_targets(m2), [])

    def test_expect_100_continue_gets_100_before_the_final_response(self):
        body = bytes(range(256)) * 400
        m = self.mark()
        c = RawClient(self.proxy, timeout=10)
        try:
            c.send(head(cl(len(body)) + b"Expect: 100-continue\r\n",
                        target=("/mock/echo?marker=" + m).encode()))
            interim = c.read_response()
            # The 100 comes before the client sends any body byte: that is what it is for.
            self.assertEqual(interim.status, 100, interim)
            self.assertEqual(interim.version, "HTTP/1.1")
            c.send(body)
            final = c.read_response()
        finally:
            c.close()
        self.assertEqual(final.status, 200, final)
        self.assertEqual(final.body, body)
        seen = self.backend_saw(m)
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["body_sha256"], hashlib.sha256(body).hexdigest())
        self.assertEqual(seen[0]["body_bytes"], len(body))
        self.assertTrue(seen[0]["body_complete"])
        # The expectation is hop-by-hop: the backend does not see it.
        self.assertNotIn("expect", {k.lower() for k in seen[0]["headers"]})

    def test_expect_100_continue_with_chunked_body(self):
        parts = [b"x" * 1000, b"y" * 5000]
        m = self.mark()
        c = RawClient(self.proxy, timeout=10)
        try:
            c.send(head(b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n",
                        target=("/mock/echo?marker=" + m).encode()))
            self.assertEqual(c.read_response().status, 100)
            c.send(chunked(*parts))
            final = c.read_response()
        finally:
            c.close()
        self.assertEqual(final.status, 200, final)
        self.assertEqual(final.body, b"".join(parts))
        self.assertEqual(self.backend_saw(m)[0]["body_sha256"],
                         hashlib.sha256(b"".join(parts)).hexdigest())

    def test_refusal_does_not_disturb_the_next_connection(self):
        data, m1, m2 = self.fill(REFUSED_BEFORE_FORWARDING["cl_then_te"])
        self.assert_refused(data, m1, m2)
        m = self.mark()
        c = RawClient(self.proxy)
        try:
            c.send(head(b"", method=b"GET", target=("/owa/?marker=" + m).encode()))
            r = c.read_response()
        finally:
            c.close()
        self.assertEqual(r.status, 200)
        self.assertEqual(len(self.backend_saw(m)), 1)


if __name__ == "__main__":
    unittest.main()

"""A MAPI over HTTP NotificationWait held 90 s by the backend passes whole through cbagate
(issue 10). The mock answers the header and PROCESSING at once, then holds the request 90 s
with no byte at all (--mapi-pending-ms 0) before DONE: longer than timeouts.body_idle (60 s by
default), which must not cut Outlook's long-lived requests. The test itself does not sleep: it
waits for the response, which the mock holds."""
import base64
import time
import unittest

from harness import ProxyTestCase, RawClient, wait_until

HOLD = 90


class NotificationWait(ProxyTestCase):
    ROUTES = [{"prefix": "/mapi", "client_cert": "none"}]
    MOCK_ARGS = ("--notification-wait-seconds", str(HOLD), "--mapi-pending-ms", "0")

    def test_notification_wait_held_90_s_returns(self):
        basic = "Basic " + base64.b64encode(b"ivan:pw-ivan").decode()
        c = RawClient(self.proxy, cert=None, timeout=HOLD + 60)
        try:
            t0 = time.monotonic()
            body = b"\x00" * 8
            c.send((f"POST /mapi/emsmdb/?MailboxId=ivan@example.com HTTP/1.1\r\n"
                    f"Host: mail.example.com\r\nAuthorization: {basic}\r\n"
                    f"Content-Type: application/mapi-http\r\nX-RequestType: NotificationWait\r\n"
                    f"X-RequestId: {{E2EA6C1C-0001}}:1\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                   + body)
            r = c.read_response()
            held = time.monotonic() - t0
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("X-Mock-Auth-User"), "ivan")
            self.assertTrue(r.body.startswith(b"PROCESSING\r\n"), r.body[:40])
            self.assertIn(b"DONE\r\n", r.body)
            self.assertTrue(r.body.endswith(b"\r\n\r\n" + b"\x00" * 16), r.body[-40:])
            self.assertGreaterEqual(held, HOLD - 1)
            # The connection is still good for the next request.
            c.send(b"GET /mapi/healthcheck.htm HTTP/1.1\r\nHost: mail.example.com\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
            rec = wait_until(lambda: next((x for x in self.proxy.access_records()
                                           if x.get("path") == "/mapi/emsmdb/"), None),
                             what="the access-log line of the NotificationWait")
            self.assertEqual((rec["status"], rec["error"]), (200, ""), rec)
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()

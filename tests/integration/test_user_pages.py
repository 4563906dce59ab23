"""What users meet (issue 13): a per-route redirect ("/" -> "/owa/", as IIS does) that forwards
nothing, and custom error pages per status ([errors]) that replace the built-in text for
cbagate's own answers, still carrying the request id of the access-log line; a page without the
request id, or a missing one, fails --check-config and start-up with a message naming it."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import BIN, MOCK, PKI, Mock, Proxy, request, wait_until

ROUTES = [
    {"prefix": "/owa", "client_cert": "require"},
    {"prefix": "/public", "client_cert": "none"},
    {"prefix": "/", "client_cert": "none", "redirect": "/owa/"},
]

PAGE = """<!doctype html>
<html><body><h1>Access refused ({{status}})</h1>
<p>{{text}}</p><p>Code: {{code}}. Call the helpdesk with this number: <b>{{request_id}}</b></p>
<p>{{unknown}} stays as written.</p></body></html>
"""


class UserPages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (BIN and MOCK and PKI):
            raise unittest.SkipTest("CBAGATE_BIN, MOCK_EXCHANGE_BIN and CBAGATE_TEST_PKI must be set")
        cls.tmp = tempfile.mkdtemp(prefix="cbagate-pages-")
        cls.page = os.path.join(cls.tmp, "403.html")
        with open(cls.page, "w") as f:
            f.write(PAGE)
        cls.mock = Mock(cls.tmp, heartbeat_cap=1)
        try:
            cls.proxy = Proxy(cls.tmp, [f"http://{cls.mock.http}"], routes=ROUTES,
                              sections={"errors": {"403": cls.page}})
        except BaseException:
            cls.mock.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        cls.mock.stop()
        if os.environ.get("CBAGATE_KEEP_TMP") is None:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def record(self, marker):
        return wait_until(lambda: next((x for x in self.proxy.access_records() if marker in x["query"]), None),
                          what=f"the access-log line of {marker}")

    def test_root_redirects_to_owa_and_forwards_nothing(self):
        before = len(self.mock.all_requests())
        for path in ("/?marker=redir1", "/"):
            r = request(self.proxy, "GET", path, cert=None)
            self.assertEqual(r.status, 302, r)
            self.assertEqual(r.header("Location"), "/owa/")
        rec = self.record("redir1")
        self.assertEqual(rec["status"], 302)
        self.assertEqual(rec["route"], "/")
        # Other paths under the redirect route are not forwarded either: 404.
        r = request(self.proxy, "GET", "/somewhere?marker=redir2", cert=None)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(self.record("redir2")["error"], "no_route")
        self.assertEqual(len(self.mock.all_requests()), before)

    def test_custom_403_page_with_request_id(self):
        r = request(self.proxy, "GET", "/owa/?marker=page1", cert=None)
        self.assertEqual(r.status, 403, r)
        self.assertTrue(r.header("Content-Type").startswith("text/html"), r.header("Content-Type"))
        body = r.body.decode()
        self.assertIn("<h1>Access refused (403.7)</h1>", body)
        self.assertIn("Code: no_certificate.", body)
        self.assertIn("<p>client certificate required</p>", body)
        self.assertIn("{{unknown}} stays as written.", body)
        rid = re.search(r"<b>(\d+-\d+)</b>", body).group(1)
        rec = self.record("page1")
        self.assertEqual(rid, f"{rec['conn_id']}-{rec['req_id']}")
        self.assertEqual(rec["error"], "no_certificate")

    def test_other_statuses_keep_the_built_in_page(self):
        r = request(self.proxy, "DELETE", "/owa/x", cert=None)
        self.assertEqual(r.status, 405, r)
        self.assertTrue(r.header("Content-Type").startswith("text/plain"))
        self.assertIn(b"request id: ", r.body)

    def test_a_page_without_the_request_id_fails_the_check_and_the_start(self):
        bad = os.path.join(self.tmp, "bad.html")
        with open(bad, "w") as f:
            f.write("<p>Sorry ({{code}})</p>\n")
        for page, needle in ((bad, f"errors.403: {bad}: has no {{{{request_id}}}} placeholder"),
                             (os.path.join(self.tmp, "missing.html"), "errors.403")):
            with self.subTest(page=page):
                p = Proxy.__new__(Proxy)
                p.dir = self.tmp
                p.uid = "bad"
                p.access_log = os.path.join(self.tmp, "access-bad.jsonl")
                p.config_path = os.path.join(self.tmp, "cbagate-bad.toml")
                p.write_config([f"http://{self.mock.http}"], routes=ROUTES, sections={"errors": {"403": page}})
                r = subprocess.run([BIN, "--check-config", p.config_path], capture_output=True, text=True,
                                   timeout=60, stdin=subprocess.DEVNULL)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn(needle, r.stderr)
                r = subprocess.run([BIN, "-c", p.config_path], capture_output=True, text=True,
                                   timeout=60, stdin=subprocess.DEVNULL)
                self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn(needle, r.stderr)


if __name__ == "__main__":
    unittest.main()

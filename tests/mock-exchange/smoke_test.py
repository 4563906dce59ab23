#!/usr/bin/env python3
"""Smoke test of the mock Exchange backend (ctest: mock_exchange_smoke, label component).

Starts the built mock-exchange twice on ephemeral loopback ports in a temp dir (one with a
1-second Ping cap, one with a 30-second cap for the wake-up tests), talks to it with the Python
standard library and checks the responses and its request log. Every wait is bounded; only the
PIDs started here are signalled.

usage: smoke_test.py --binary PATH --fixtures DIR [-k SUBSTRING]
"""
import argparse
import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

EAS = "/Microsoft-Server-ActiveSync"
WBXML = "application/vnd.ms-sync.wbxml"
MIB = 1024 * 1024


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def wait_until(pred, timeout, what):
    """Polls pred() until it returns a truthy value; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure("timed out waiting for " + what)
        time.sleep(0.01)


class Mock:
    """One mock-exchange process on ephemeral ports."""

    def __init__(self, binary, workdir, name, args):
        self.name = name
        self.ready = os.path.join(workdir, name + ".ready.json")
        self.log_path = os.path.join(workdir, name + ".log.jsonl")
        self.err_path = os.path.join(workdir, name + ".stderr")
        cmd = [binary, "--listen", "127.0.0.1:0", "--ready-file", self.ready,
               "--request-log", self.log_path] + args
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err)
        self._log_offset = 0
        self._entries = {}
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + 15
        while not os.path.exists(self.ready):
            if time.monotonic() > deadline:
                raise Failure(self.name + ": no ready file")
            try:
                self.proc.wait(timeout=0.02)
                raise Failure(self.name + ": exited early with " + str(self.proc.returncode) +
                              ": " + open(self.err_path).read())
            except subprocess.TimeoutExpired:
                pass
        with open(self.ready) as f:
            ports = json.load(f)
        host, port = ports["http"][0].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.tls_port = int(ports["https"][0].rsplit(":", 1)[1]) if ports["https"] else None

    def conn(self, timeout=30):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, target, body=None, headers=None, timeout=30):
        c = self.conn(timeout)
        try:
            c.request(method, target, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r, data
        finally:
            c.close()

    def raw(self, data, timeout=10):
        """Sends bytes on a fresh socket and reads until the server closes."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(data)
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return b"".join(chunks)

    def _scan(self):
        """Reads the complete new lines of the request log into self._entries."""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        end = data.rfind(b"\n")
        if end >= 0:
            for line in data[:end].split(b"\n"):
                rec = json.loads(line)
                self._entries[rec["id"]] = rec
            self._log_offset += end + 1

    def entry(self, req_id, timeout=10):
        """The request-log record with this id (the log line is written when a request ends)."""
        req_id = int(req_id)

        def scan():
            self._scan()
            return self._entries.get(req_id)

        return wait_until(scan, timeout, self.name + " log entry " + str(req_id))

    def find(self, pred, timeout=10):
        """The first request-log record for which pred(record) is true."""
        def scan():
            self._scan()
            return next((e for e in self._entries.values() if pred(e)), None)

        return wait_until(scan, timeout, self.name + " matching log entry")

    def stats(self):
        _, data = self.request("GET", "/mock/stats")
        return json.loads(data)

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise Failure("no VmRSS")

    def sanitized(self):
        """True when the binary runs under AddressSanitizer."""
        with open("/proc/%d/maps" % self.proc.pid) as f:
            return "libasan" in f.read() or "ASAN_OPTIONS" in os.environ

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise Failure(self.name + ": did not exit on SIGTERM")
        self.err.close()
        return self.proc.returncode


def eas_target(cmd, user="alice", device="dev1", devtype="SmartPhone"):
    return "%s?Cmd=%s&User=%s&DeviceId=%s&DeviceType=%s" % (EAS, cmd, user, device, devtype)


def eas_b64(version, code, device, devtype, user=None, policy_key=None):
    blob = bytes([version, code]) + struct.pack("<H", 0x0409)
    blob += bytes([len(device)]) + device
    blob += (bytes([4]) + struct.pack("<I", policy_key)) if policy_key is not None else bytes([0])
    blob += bytes([len(devtype)]) + devtype
    if user is not None:
        blob += bytes([8, len(user)]) + user
    return EAS + "?" + base64.b64encode(blob).decode()


def wbxml_headers(identity=None):
    h = {"Content-Type": WBXML, "MS-ASProtocolVersion": "14.1"}
    if identity:
        h["X-Client-UPN"] = identity
    return h


def pattern(n):
    return bytes((97 + i % 26) for i in range(n))


def parse_raw_response(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers, body


def dechunk(body):
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += body[:size]
        body = body[size + 2:]


# -------------------------------------------------------------------------------------------------
# Tests. Each takes the context dict: m1 (cap 1 s, 2 threads), m2 (cap 30 s), fx (fixtures).

def test_options_headers(ctx):
    m1 = ctx["m1"]
    r, data = m1.request("OPTIONS", EAS)
    check(r.status == 200, "OPTIONS status %d" % r.status)
    check(r.getheader("MS-Server-ActiveSync"), "no MS-Server-ActiveSync")
    versions = r.getheader("MS-ASProtocolVersions") or ""
    check("14.1" in versions.split(",") and "16.1" in versions.split(","), "versions: " + versions)
    commands = (r.getheader("MS-ASProtocolCommands") or "").split(",")
    for c in ("Sync", "FolderSync", "Ping", "SendMail", "Provision", "ItemOperations", "Settings"):
        check(c in commands, "command list lacks " + c)
    check(r.getheader("Allow") == "OPTIONS,POST", "Allow")
    check(data == b"", "OPTIONS body not empty")


def test_foldersync_plain_query(ctx):
    m1, fx = ctx["m1"], ctx["fx"]
    r, data = m1.request("POST", eas_target("FolderSync", "bob", "devPlain", "Android"),
                         fx["foldersync_req"], wbxml_headers())
    check(r.status == 200, "status %d" % r.status)
    check(r.getheader("Content-Type") == WBXML, "content type")
    check(data == fx["foldersync_resp"], "FolderSync SyncKey 0 must get the full hierarchy fixture")
    e = m1.entry(r.getheader("X-Mock-Request-Id"))
    check(e["cmd"] == "FolderSync", "log cmd %r" % e["cmd"])
    check(e["eas"]["form"] == "plain" and e["eas"]["user"] == "bob", "log eas %r" % e["eas"])
    check(e["eas"]["device_id"] == "devPlain" and e["eas"]["device_type"] == "Android", "device")
    check(e["wbxml"]["root"] == "FolderSync", "decoded root %r" % e.get("wbxml"))
    # A later FolderSync (SyncKey 1) gets "no changes".
    req1 = fx["foldersync_req"].replace(b"\x03\x30\x00", b"\x03\x31\x00")
    r, data = m1.request("POST", eas_target("FolderSync"), req1, wbxml_headers())
    check(data == fx["foldersync_resp_nochange"], "SyncKey 1 -> nochange fixture")


def test_foldersync_base64_query(ctx):
    m1, fx = ctx["m1"], ctx["fx"]
    guid = bytes.fromhex("0123456789abcdef0123456789abcdef")
    target = eas_b64(141, 9, guid, b"iPhone", b"carol@example.com", 1307199584)
    r, data = m1.request("POST", target, fx["foldersync_req"], wbxml_headers())
    check(r.status == 200 and data == fx["foldersync_resp"], "base64 FolderSync status %d" % r.status)
    e = m1.entry(r.getheader("X-Mock-Request-Id"))
    check(e["cmd"] == "FolderSync", "log cmd %r" % e["cmd"])
    eas = e["eas"]
    check(eas["form"] == "base64" and eas["version"] == "14.1", "form/version %r" % eas)
    check(eas["device_id"] == guid.hex().upper(), "binary DeviceId hex-encoded: %r" % eas["device_id"])
    check(eas["device_type"] == "iPhone" and eas["user"] == "carol@example.com", "%r" % eas)
    check(eas["policy_key"] == 1307199584 and eas["locale"] == 0x0409, "%r" % eas)
    # The README's worked example: Sync at 16.1, DeviceId ANDROIDC0FFEE01, User alice@contoso.com.
    target = EAS + "?oQAJBA9BTkRST0lEQzBGRkVFMDEAB0FuZHJvaWQIEWFsaWNlQGNvbnRvc28uY29t"
    r, data = m1.request("POST", target, fx["sync_req_initial"], wbxml_headers())
    check(r.status == 200 and data == fx["sync_resp_initial"], "base64 Sync -> sync_resp_initial")
    e = m1.entry(r.getheader("X-Mock-Request-Id"))
    check(e["cmd"] == "Sync" and e["eas"]["version"] == "16.1", "%r" % e["eas"])
    check(e["eas"]["device_id"] == "ANDROIDC0FFEE01" and e["eas"]["user"] == "alice@contoso.com",
          "%r" % e["eas"])


def test_other_commands(ctx):
    m1, fx = ctx["m1"], ctx["fx"]
    cases = [("Provision", "provision_req", "provision_resp"),
             ("Provision", "provision_ack", "provision_resp_final"),
             ("Settings", "settings_devinfo", "settings_resp"),
             ("ItemOperations", "itemops_fetch_att", "itemops_resp"),
             ("Sync", "sync_req_getchanges", "sync_resp_add")]
    for cmd, req, resp in cases:
        r, data = m1.request("POST", eas_target(cmd), fx[req], wbxml_headers())
        check(r.status == 200 and data == fx[resp], "%s(%s) -> %s (status %d)" % (cmd, req, resp, r.status))


def test_ping_held_until_cap(ctx):
    m1, fx = ctx["m1"], ctx["fx"]
    t0 = time.monotonic()
    r, data = m1.request("POST", eas_target("Ping", device="pingDev"), fx["ping_req"],
                         wbxml_headers("alice@example.com"))
    elapsed = time.monotonic() - t0
    check(r.status == 200, "status %d" % r.status)
    check(0.9 <= elapsed < 5, "Ping held %.2f s, expected about 1 s (the cap)" % elapsed)
    check(data == fx["ping_resp_expired"], "Ping answer must be the ping_resp_expired fixture")
    e = m1.entry(r.getheader("X-Mock-Request-Id"))
    check(e["ping"]["heartbeat"] == 480 and e["ping"]["hold_s"] == 1, "%r" % e["ping"])
    check(e["ping"]["outcome"] == "expired", "%r" % e["ping"])
    # An empty Ping reuses the cached HeartbeatInterval of (user, device) and is held again.
    t0 = time.monotonic()
    r, data = m1.request("POST", eas_target("Ping", device="pingDev"), b"",
                         wbxml_headers("alice@example.com"))
    check(time.monotonic() - t0 >= 0.9 and data == fx["ping_resp_expired"], "empty Ping held")
    # An empty Ping from a device with nothing cached gets Status 3 at once.
    t0 = time.monotonic()
    r, data = m1.request("POST", eas_target("Ping", device="freshDev"), b"", wbxml_headers())
    check(time.monotonic() - t0 < 0.9 and data == fx["ping_resp_missing"], "Status 3 expected")


def test_sendmail_50mb_chunked_streamed(ctx):
    m1 = ctx["m1"]
    block = os.urandom(64 * 1024)
    total = 50 * MIB

    def body(n):
        sent = 0
        while sent < n:
            k = min(len(block), n - sent)
            yield block[:k]
            sent += k

    def upload(n):
        c = m1.conn(60)
        try:
            c.request("POST", eas_target("SendMail"), body=body(n), encode_chunked=True,
                      headers={"Content-Type": "message/rfc822", "Transfer-Encoding": "chunked"})
            r = c.getresponse()
            return r, r.read()
        finally:
            c.close()

    upload(4 * MIB)  # warm-up: buffers and allocator pools exist before the baseline
    before = m1.rss_kib()
    r, data = upload(total)
    after = m1.rss_kib()
    check(r.status == 200 and data == b"", "SendMail status %d, body %d bytes" % (r.status, len(data)))
    e = m1.entry(r.getheader("X-Mock-Request-Id"))
    h = hashlib.sha256()
    for b in body(total):
        h.update(b)
    check(e["body_bytes"] == total, "body_bytes %d" % e["body_bytes"])
    check(e["body_sha256"] == h.hexdigest(), "body_sha256 mismatch")
    check("chunked" in e["headers"]["Transfer-Encoding"][0], "request was chunked")
    growth = after - before
    # AddressSanitizer keeps freed blocks in quarantine, so RSS grows with every async read;
    # buffering the body whole would still add 50 MB.
    limit = 24 * 1024 if m1.sanitized() else 4 * 1024
    check(growth < limit, "RSS grew by %d KiB during a 50 MB upload (not streamed?)" % growth)
    ctx["notes"].append("50 MB SendMail: RSS %d -> %d KiB" % (before, after))


def test_content_length_body(ctx):
    m1 = ctx["m1"]
    payload = os.urandom(3 * MIB + 17)
    r, data = m1.request("POST", eas_target("SendMail"), payload, {"Content-Type": "message/rfc822"})
    e = m1.entry(r.getheader("X-Mock-Request-Id"))
    check(r.status == 200 and e["body_bytes"] == len(payload), "Content-Length body counted")
    check(e["body_sha256"] == hashlib.sha256(payload).hexdigest(), "hash")


def test_identity_header_echoed(ctx):
    m1 = ctx["m1"]
    r, data = m1.request("GET", "/owa/", headers={"X-Client-UPN": "dave@example.com"})
    check(r.status == 200 and r.getheader("X-Mock-Identity") == "dave@example.com", "echo")
    check(b"dave@example.com" in data, "OWA page names the identity")
    e = m1.entry(r.getheader("X-Mock-Request-Id"))
    check(e["identity"] == "dave@example.com" and e["identity_count"] == 1, "%r" % e["identity"])
    r, data = m1.request("GET", "/owa/")
    check(r.getheader("X-Mock-Identity") == "-", "no identity -> '-'")
    e = m1.entry(r.getheader("X-Mock-Request-Id"))
    check(e["identity"] is None and e["identity_count"] == 0, "identity null")


def test_duplicate_identity_recorded(ctx):
    m1 = ctx["m1"]
    data = m1.raw(b"GET /ecp/ HTTP/1.1\r\nHost: x\r\nX-Client-UPN: real@example.com\r\n"
                  b"x-client-upn: spoofed@example.com\r\nConnection: close\r\n\r\n")
    status, headers, body = parse_raw_response(data)
    check(" 200 " in status, status)
    check(headers["x-mock-identity"] == "real@example.com, spoofed@example.com", "echo of both")
    e = m1.entry(headers["x-mock-request-id"])
    check(e["identity_count"] == 2, "identity_count %r" % e["identity_count"])
    check(e["identity"] == ["real@example.com", "spoofed@example.com"], "%r" % e["identity"])
    check(e["headers"]["X-Client-UPN"] == ["real@example.com", "spoofed@example.com"],
          "headers grouped case-insensitively under the first spelling: %r" % e["headers"])
    check(["x-client-upn", "spoofed@example.com"] in e["raw_headers"], "raw spelling kept")


def test_https_listener(ctx):
    m1 = ctx["m1"]
    tls = ssl.create_default_context(cafile=ctx["cert"])
    tls.check_hostname = False
    c = http.client.HTTPSConnection("127.0.0.1", m1.tls_port, context=tls, timeout=10)
    try:
        c.request("GET", "/owa/", headers={"X-Client-UPN": "erin@example.com"})
        r = c.getresponse()
        data = r.read()
        c.request("GET", "/healthcheck.htm")
        r2 = c.getresponse()
        data2 = r2.read()
    finally:
        c.close()
    check(r.status == 200 and b"erin@example.com" in data, "HTTPS OWA page")
    check(r2.status == 200 and data2 == b"OK", "HTTPS healthcheck")
    check(r.getheader("X-Mock-Connection") == r2.getheader("X-Mock-Connection"), "TLS keep-alive")
    e = m1.entry(r.getheader("X-Mock-Request-Id"))
    check(e["tls"] is True, "log tls")


def test_die_mid_response(ctx):
    m1 = ctx["m1"]
    t0 = time.monotonic()
    data = m1.raw(b"GET /mock/die-mid-response HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = parse_raw_response(data)
    check(" 200 " in status and headers.get("content-length") == "1000", "header CL 1000")
    check(body == b"0123456789", "exactly 10 body bytes, then close (got %d)" % len(body))
    check(time.monotonic() - t0 < 5, "closed promptly")


def test_keep_alive_and_http10(ctx):
    m1 = ctx["m1"]
    c = m1.conn(10)
    try:
        ids = []
        for _ in range(3):
            c.request("GET", "/healthcheck.htm")
            r = c.getresponse()
            r.read()
            ids.append(r.getheader("X-Mock-Connection"))
    finally:
        c.close()
    check(len(set(ids)) == 1, "keep-alive reuse: %r" % ids)
    data = m1.raw(b"GET /owa/ HTTP/1.0\r\nX-Client-UPN: old@example.com\r\n\r\n")
    status, headers, body = parse_raw_response(data)
    check(status.startswith("HTTP/1.0 200"), status)
    check(b"old@example.com" in body, "HTTP/1.0 page")
    # HTTP/1.0 with keep-alive is honoured too.
    with socket.create_connection((m1.host, m1.port), timeout=10) as s:
        for _ in range(2):
            s.sendall(b"GET /healthcheck.htm HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            buf = b""
            while b"\r\n\r\nOK" not in buf:
                b = s.recv(4096)
                check(b, "HTTP/1.0 keep-alive connection closed early")
                buf += b


def test_expect_100_continue(ctx):
    m1 = ctx["m1"]
    body = os.urandom(100000)
    with socket.create_connection((m1.host, m1.port), timeout=10) as s:
        s.sendall(("POST /mock/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                   "Expect: 100-continue\r\nConnection: close\r\n\r\n" % len(body)).encode())
        first = s.recv(4096)
        check(first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), "100 Continue: %r" % first[:40])
        rest = first[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        s.sendall(body)
        chunks = [rest]
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    status, headers, got = parse_raw_response(b"".join(chunks))
    check(" 200 " in status and got == body, "echo after 100-continue")


def test_echo_chunked(ctx):
    m1 = ctx["m1"]
    payload = os.urandom(300000)
    c = m1.conn(30)
    result = {}

    def reader():
        r = c.getresponse()
        result["status"] = r.status
        result["te"] = r.getheader("Transfer-Encoding")
        result["data"] = r.read()

    try:
        c.putrequest("POST", "/mock/echo")
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        t = threading.Thread(target=reader)
        started = False
        for i in range(0, len(payload), 50000):
            piece = payload[i:i + 50000]
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            if not started:
                t.start()
                started = True
        c.send(b"0\r\n\r\n")
        t.join(30)
    finally:
        c.close()
    check(result.get("status") == 200 and result.get("data") == payload, "echo streams body back")
    check(result.get("te") == "chunked", "chunked echo")


def test_bytes_and_chunked_hooks(ctx):
    m1 = ctx["m1"]
    r, data = m1.request("GET", "/mock/bytes/100000")
    check(r.status == 200 and r.getheader("Content-Length") == "100000", "bytes CL")
    check(data == pattern(100000), "bytes content")
    r, data = m1.request("GET", "/mock/chunked/70000")
    check(r.getheader("Transfer-Encoding") == "chunked" and data == pattern(70000), "chunked")
    r, data = m1.request("GET", "/mock/bytes/0")
    check(r.status == 200 and data == b"", "zero bytes")


def test_status_and_slow_headers(ctx):
    m1 = ctx["m1"]
    r, _ = m1.request("GET", "/mock/status/503")
    check(r.status == 503, "status hook")
    r, _ = m1.request("GET", "/mock/status/204")
    check(r.status == 204, "204")
    t0 = time.monotonic()
    r, _ = m1.request("GET", "/mock/slow-headers/300")
    check(r.status == 200 and time.monotonic() - t0 >= 0.29, "slow headers")


def test_bad_requests(ctx):
    m1, fx = ctx["m1"], ctx["fx"]
    r, _ = m1.request("POST", eas_target("Frobnicate"), b"", wbxml_headers())
    check(r.status == 400, "unknown Cmd -> 400, got %d" % r.status)
    r, _ = m1.request("POST", EAS + "?Cmd=Sync&User=a&DeviceType=x", b"", wbxml_headers())
    check(r.status == 400, "missing DeviceId -> 400")
    r, _ = m1.request("POST", eas_target("GetItemEstimate"), b"", wbxml_headers())
    check(r.status == 501, "known but not modelled -> 501, got %d" % r.status)
    r, _ = m1.request("GET", EAS)
    check(r.status == 501, "GET on ActiveSync -> 501")
    garbage = b"\x03\x01\x6a\x00\x00\x07\x56\x52\x03\x30" + os.urandom(64)
    r, _ = m1.request("POST", eas_target("FolderSync"), garbage, wbxml_headers())
    check(r.status == 400, "undecodable WBXML -> 400, got %d" % r.status)
    e = m1.entry(r.getheader("X-Mock-Request-Id"))
    check(e["wbxml"].get("error"), "decode error logged: %r" % e.get("wbxml"))
    r, _ = m1.request("GET", "/nowhere")
    check(r.status == 404, "404")
    data = m1.raw(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
    check(data.startswith(b"HTTP/1.1 400"), "malformed request -> 400")
    check(m1.stats()["requests"] > 0, "still serving")


def test_owa_ecp_pages_and_events(ctx):
    m1 = ctx["m1"]
    r, data = m1.request("GET", "/ecp/", headers={"X-Client-UPN": "frank@example.com"})
    check(r.status == 200 and b"frank@example.com" in data, "ECP page")
    r, data = m1.request("POST", "/owa/service.svc?action=FindFolder", b"{}",
                         {"X-Client-UPN": "frank@example.com", "Content-Type": "application/json"})
    check(r.status == 200 and json.loads(data)["identity"] == "frank@example.com", "OWA JSON")
    r, data = m1.request("GET", "/Microsoft-Server-ActiveSync/healthcheck.htm")
    check(r.status == 200 and data == b"OK", "healthcheck under a vdir")
    t0 = time.monotonic()
    data = m1.raw(b"GET /owa/ev.owa2?ns=PendingRequest&ev=PendingNotificationRequest HTTP/1.1\r\n"
                  b"Host: x\r\nX-Client-UPN: gina@example.com\r\nConnection: close\r\n\r\n")
    elapsed = time.monotonic() - t0
    status, headers, body = parse_raw_response(data)
    check(headers.get("transfer-encoding") == "chunked", "ev.owa2 chunked")
    frames = dechunk(body).count(b"<script>")
    check(frames == 3 and b"gina@example.com" in body, "3 frames naming the identity")
    check(0.35 <= elapsed < 5, "frames spaced by timers (%.2f s)" % elapsed)


def test_notify_wakes_held_ping(ctx):
    m2, fx = ctx["m2"], ctx["fx"]
    result = {}

    def ping():
        t0 = time.monotonic()
        result["resp"] = m2.request("POST", eas_target("Ping", "bob", "bobDev"), fx["ping_req"],
                                    wbxml_headers("bob@example.com"), timeout=60)
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=ping)
    t.start()
    wait_until(lambda: m2.stats()["held"] == 1, 10, "Ping held")
    r, data = m2.request("POST", "/mock/notify?user=bob@example.com")
    check(r.status == 200 and json.loads(data)["woken"] == 1, "notify: %r" % data)
    t.join(10)
    check(not t.is_alive(), "Ping not answered after notify")
    r, data = result["resp"]
    check(r.status == 200 and data == fx["ping_resp_changes"], "Status 2 fixture")
    check(result["elapsed"] < 10, "answered at once (%.1f s)" % result["elapsed"])
    e = m2.entry(r.getheader("X-Mock-Request-Id"))
    check(e["ping"]["outcome"] == "changes", "%r" % e["ping"])
    check(m2.stats()["held"] == 0, "registry empty")


def test_newer_ping_supersedes_older(ctx):
    m2, fx = ctx["m2"], ctx["fx"]
    results = {}

    def ping(tag):
        results[tag] = m2.request("POST", eas_target("Ping", "sup", "supDev"), fx["ping_req"],
                                  wbxml_headers("sup@example.com"), timeout=60)

    a = threading.Thread(target=ping, args=("a",))
    a.start()
    wait_until(lambda: m2.stats()["held"] == 1, 10, "first Ping held")
    b = threading.Thread(target=ping, args=("b",))
    b.start()
    a.join(10)
    check(not a.is_alive(), "older Ping not ended by the newer one")
    r, data = results["a"]
    check(data == fx["ping_resp_expired"], "superseded Ping answers Status 1")
    check(m2.entry(r.getheader("X-Mock-Request-Id"))["ping"]["outcome"] == "superseded", "outcome")
    wait_until(lambda: m2.stats()["held"] == 1, 10, "second Ping held")
    m2.request("POST", "/mock/notify?user=sup@example.com")
    b.join(10)
    check(not b.is_alive() and results["b"][1] == fx["ping_resp_changes"], "second woken")


def test_ping_client_close_cleaned_up(ctx):
    m2, fx = ctx["m2"], ctx["fx"]
    before = m2.stats()["open_connections"]
    socks = []
    for i in range(20):
        s = socket.create_connection((m2.host, m2.port), timeout=10)
        req = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
               "X-Client-UPN: gone%d@example.com\r\n\r\n"
               % (eas_target("Ping", "gone", "goneDev%d" % i), WBXML, len(fx["ping_req"]), i))
        s.sendall(req.encode() + fx["ping_req"])
        socks.append(s)
    wait_until(lambda: m2.stats()["held"] == 20, 10, "20 Pings held")
    for s in socks:
        s.close()
    wait_until(lambda: m2.stats()["held"] == 0, 10, "held Pings released after client close")
    wait_until(lambda: m2.stats()["open_connections"] <= before, 10, "connections closed")
    rec = m2.find(lambda e: e["identity"] == "gone7@example.com")
    check(rec["ping"]["outcome"] == "client_closed", "%r" % rec.get("ping"))


def test_tls_ping_client_close(ctx):
    m2, fx = ctx["m2"], ctx["fx"]
    tls = ssl.create_default_context(cafile=ctx["cert"])
    tls.check_hostname = False
    # One client just drops TCP, the other sends a TLS close_notify first.
    for who, polite in (("tls-drop@example.com", False), ("tls-notify@example.com", True)):
        raw = socket.create_connection(("127.0.0.1", m2.tls_port), timeout=10)
        s = tls.wrap_socket(raw)
        req = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
               "X-Client-UPN: %s\r\n\r\n"
               % (eas_target("Ping", "tls", "dev-" + who), WBXML, len(fx["ping_req"]), who))
        s.sendall(req.encode() + fx["ping_req"])
        wait_until(lambda: m2.stats()["held"] == 1, 10, "TLS Ping held")
        t0 = time.monotonic()
        if polite:
            try:
                s.unwrap()  # close_notify; the mock answers by closing
            except (ssl.SSLError, OSError):
                pass
        s.close()
        wait_until(lambda: m2.stats()["held"] == 0, 10, "TLS Ping released")
        check(time.monotonic() - t0 < 10, "released long before the 30 s cap")
        rec = m2.find(lambda e, who=who: e["identity"] == who)
        check(rec["ping"]["outcome"] == "client_closed" and rec["tls"] is True,
              "%s: %r" % (who, rec.get("ping")))
        check(rec["status"] is None and rec["complete"] is False, "no response was sent")


TESTS = [
    test_options_headers,
    test_foldersync_plain_query,
    test_foldersync_base64_query,
    test_other_commands,
    test_ping_held_until_cap,
    test_sendmail_50mb_chunked_streamed,
    test_content_length_body,
    test_identity_header_echoed,
    test_duplicate_identity_recorded,
    test_https_listener,
    test_die_mid_response,
    test_keep_alive_and_http10,
    test_expect_100_continue,
    test_echo_chunked,
    test_bytes_and_chunked_hooks,
    test_status_and_slow_headers,
    test_bad_requests,
    test_owa_ecp_pages_and_events,
    test_notify_wakes_held_ping,
    test_newer_ping_supersedes_older,
    test_ping_client_close_cleaned_up,
    test_tls_ping_client_close,
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("-k", default="", help="run only tests whose name contains this")
    args = ap.parse_args()

    fx = {}
    for name in os.listdir(args.fixtures):
        if name.endswith(".wbxml"):
            with open(os.path.join(args.fixtures, name), "rb") as f:
                fx[name[:-6]] = f.read()

    failures = 0
    with tempfile.TemporaryDirectory(prefix="mock-exchange-smoke-") as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", key, "-out", cert],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        mocks = []
        try:
            m1 = Mock(args.binary, tmp, "m1",
                      ["--tls-listen", "127.0.0.1:0", "--cert", cert, "--key", key,
                       "--ping-heartbeat-cap", "1", "--threads", "2",
                       "--owa-frame-interval-ms", "200"])
            mocks.append(m1)
            m2 = Mock(args.binary, tmp, "m2",
                      ["--tls-listen", "127.0.0.1:0", "--cert", cert, "--key", key,
                       "--ping-heartbeat-cap", "30"])
            mocks.append(m2)
            ctx = {"m1": m1, "m2": m2, "fx": fx, "cert": cert, "notes": []}
            for test in TESTS:
                if args.k and args.k not in test.__name__:
                    continue
                t0 = time.monotonic()
                try:
                    test(ctx)
                    print("PASS %-40s %.2fs" % (test.__name__, time.monotonic() - t0), flush=True)
                except Exception as e:  # noqa: BLE001 - report every failure and go on
                    failures += 1
                    print("FAIL %-40s %s" % (test.__name__, e), flush=True)
                    if not isinstance(e, Failure):
                        traceback.print_exc()
            for note in ctx["notes"]:
                print("note: " + note)
        finally:
            for m in mocks:
                try:
                    rc = m.stop()
                    if rc != 0:
                        failures += 1
                        print("FAIL %s exit code %r on SIGTERM" % (m.name, rc))
                    else:
                        print("PASS %s exits 0 on SIGTERM" % m.name)
                except Failure as e:
                    failures += 1
                    print("FAIL " + str(e))
                with open(m.err_path, "rb") as f:
                    err = f.read().decode(errors="replace")
                if failures:
                    print("--- %s stderr ---\n%s" % (m.name, err))
    print("%d failure(s)" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

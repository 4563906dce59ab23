#!/usr/bin/env python3
"""The proxy benchmark behind tests/bench/run (python3 standard library only).

cbagate, nginx and HAProxy in front of the same backends; the proxy on one core, the load
generators and the backends on another. Each measurement is repeated; medians, ratios and
the proxy's own CPU seconds are kept. tests/bench/README.md describes the measurements.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXIES = ("cbagate", "nginx", "haproxy")
STEPS = ("crypto", "handshake", "keepalive", "held", "idle", "upload", "counters")
UPLOAD_BYTES = 50 * 1024 * 1024
BACKEND_BODY = "<html><body>mock exchange: ok</body></html>\\n"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)


# ---- processes --------------------------------------------------------------------------------

def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Procs:
    """Every process the bench started, stopped by PID at the end."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []

    def start(self, argv: list[str], core: str | None, out: Path, **kw) -> subprocess.Popen:
        if core is not None:
            argv = ["taskset", "-c", core] + argv
        f = open(out, "ab")
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", f), stderr=f, stdin=subprocess.DEVNULL,
                             preexec_fn=_raise_nofile, **kw)
        f.close()
        self.live.append(p)
        return p

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        if p in self.live:
            self.live.remove(p)

    def stop_all(self) -> None:
        for p in list(self.live):
            self.stop(p, timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, what: str, timeout: float = 15.0, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    fail(f"timed out waiting for {what}")


def can_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def children_of(pids: list[int]) -> list[int]:
    out = []
    want = set(pids)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid in want:
            out.append(int(d))
    return out


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """The processes' CPU seconds in user space and in the kernel (/proc/PID/stat)."""
    user = kernel = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        user += int(f[11])  # utime
        kernel += int(f[12])  # stime
    return user / CLK_TCK, kernel / CLK_TCK


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_times(pids))


# Callgrind's self cost per shared object, grouped: the proxy's own code (with the C++ runtime
# and Boost, which are compiled into it or its libstdc++), OpenSSL, libc and the allocator.
CG_GROUPS = (("openssl", ("libssl.so", "libcrypto.so")),
             ("libc_alloc", ("libc.so", "libmimalloc.so", "ld-linux")))


def callgrind_by_group(text: str) -> dict[str, int]:
    """Instructions of one callgrind dump by group ("own" = everything not in CG_GROUPS),
    counting each cost line once (the inclusive cost after a calls= line is skipped)."""
    obs: dict[str, str] = {}
    out = {"own": 0, **{g: 0 for g, _ in CG_GROUPS}}
    group = "own"
    skip = False
    for line in text.splitlines():
        if line.startswith(("ob=", "cob=")):
            m = re.match(r"(c?ob)=\((\d+)\)(?: (.*))?", line)
            if m:
                if m.group(3):
                    obs[m.group(2)] = m.group(3).rsplit("/", 1)[-1]
                if m.group(1) == "ob":
                    name = obs.get(m.group(2), "")
                    group = next((g for g, libs in CG_GROUPS if name.startswith(libs)), "own")
            continue
        if line.startswith("calls="):
            skip = True
            continue
        if line[:1].isdigit() or line[:1] in "+-*":
            if skip:
                skip = False
                continue
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                out[group] += int(parts[1])
    return out


def status_kib(pids: list[int], key: str) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def reset_hwm(pids: list[int]) -> None:
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass


def established(port: int) -> int:
    """TCP connections in ESTABLISHED whose local port is `port` (server side)."""
    n = 0
    hexport = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split(None, 4)
                    if parts[1].endswith(hexport) and parts[3] == "01":
                        n += 1
        except OSError:
            pass
    return n


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---- the bench --------------------------------------------------------------------------------

class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.src = Path(a.source_dir)
        self.build = Path(a.build_dir) if os.path.isabs(a.build_dir) else self.src / a.build_dir
        self.bins = {
            "cbagate": Path(a.cbagate) if a.cbagate else self.build / "proxy/cbagate",
            "mock": self.build / "tests/mock-exchange/mock-exchange",
            "eas_load": self.build / "tests/eas-load/eas-load",
        }
        for k, v in self.bins.items():
            if not os.access(v, os.X_OK):
                fail(f"{k} is not built: {v}")
        for tool in ("nginx", "haproxy", "ab", "openssl", "curl", "taskset", "gnuplot"):
            if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
                fail(f"{tool} is not installed (tests/bench/run installs it as root)")
        ncpu = os.cpu_count() or 1
        self.core_proxy = "0"
        self.core_load = str(ncpu - 1) if ncpu > 1 else "0"
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out = Path(a.out) if a.out else self.build / "bench-results" / stamp
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="cbagate-bench-"))
        self.procs = Procs()
        self.results: dict = {"metrics": {}, "crypto": {}, "checks": {}}
        self.metrics = self.results["metrics"]
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"

    # -- setup ------------------------------------------------------------------------------
    def make_pki(self) -> None:
        users = max(self.a.held, 64, self.a.storm)
        self.pki = self.build / f"bench-pki-{users}"
        log(f"setup: PKI with {users} bulk users in {self.pki} (make-pki --force reuses a fresh one)")
        t0 = time.monotonic()
        subprocess.run([str(self.src / "certs-dev/make-pki"), "--force", "--users", str(users),
                        str(self.pki)], check=True, stdout=subprocess.DEVNULL)
        log(f"setup: PKI ready in {time.monotonic() - t0:.1f} s")
        w = self.work / "pki"
        w.mkdir()
        p = self.pki
        # Server certificates: make-pki's ECDSA P-256 one, and an RSA-2048 one made here with the
        # same profile, signed by the same issuing CA.
        self.server = {
            "ec": {"chain": p / "server-chain.pem", "key": p / "server.key"},
            "rsa": {"chain": w / "rsa-chain.pem", "key": w / "rsa.key"},
        }
        ext = w / "rsa.ext"
        ext.write_text("basicConstraints = critical,CA:FALSE\n"
                       "keyUsage = critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\n"
                       "authorityKeyIdentifier = keyid:always\n"
                       "subjectAltName = DNS:mail.lab.test,DNS:localhost,IP:127.0.0.1\n")
        env = dict(os.environ, SSL_CERT_FILE="/dev/null")
        subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(w / "rsa.key"), "-subj", "/O=cbagate dev/CN=mail.lab.test", "-out",
                        str(w / "rsa.csr")], check=True, env=env, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", str(w / "rsa.csr"), "-CA",
                        str(p / "ca/issuing.pem"), "-CAkey", str(p / "ca/issuing.key"),
                        "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "30",
                        "-sha256", "-extfile", str(ext), "-out", str(w / "rsa.pem")],
                       check=True, env=env, capture_output=True)
        (w / "rsa-chain.pem").write_bytes((w / "rsa.pem").read_bytes() +
                                          (p / "ca/issuing.pem").read_bytes())
        for k, s in self.server.items():  # HAProxy wants chain and key in one file
            full = w / f"{k}-full.pem"
            full.write_bytes(s["chain"].read_bytes() + s["key"].read_bytes())
            full.chmod(0o600)
            s["full"] = full
        # nginx and HAProxy: one CA file with the root and the issuing CA (cbagate takes them as
        # client_ca and client_intermediates); clients may send only their leaf (s_time does).
        self.ca_bundle = w / "client-ca-bundle.pem"
        self.ca_bundle.write_bytes((p / "client-roots.pem").read_bytes() +
                                   (p / "client-intermediates.pem").read_bytes())
        self.root = p / "ca/root.pem"
        # One client for the single-certificate drivers (s_time, ab, curl): bulk user 1.
        users_tsv = (p / "bulk/users.tsv").read_text().split("\n", 1)[0].split("\t")
        self.client_cert = p / users_tsv[2]
        self.client_key = p / users_tsv[3]
        self.client_chain = w / "client-chain.pem"
        self.client_chain.write_bytes(self.client_cert.read_bytes() +
                                      (p / "ca/issuing.pem").read_bytes())
        self.ab_pem = w / "client-ab.pem"  # ab -E: certificate (chain) and key in one file
        self.ab_pem.write_bytes(self.client_chain.read_bytes() + self.client_key.read_bytes())
        self.ab_pem.chmod(0o600)
        self.upload_file = self.work / "upload.bin"
        with open(self.upload_file, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(UPLOAD_BYTES >> 20):
                f.write(block)

    def start_backends(self) -> None:
        # nginx as the fast backend (small fixed body), as in the reference measurements.
        self.nb_port = free_port()
        d = self.work / "nginx-backend"
        (d / "tmp").mkdir(parents=True)
        conf = d / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 19900; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  keepalive_timeout 300s;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{self.nb_port} backlog=4096;
    default_type text/plain;
    location / {{ return 200 "{BACKEND_BODY}"; }}
  }}
}}
""")
        self.procs.start([self.nginx, "-e", str(d / "error.log"), "-c", str(conf), "-p", str(d),
                          "-g", "daemon off; user root;"], self.core_load, d / "stdout.log")
        wait_for(lambda: can_connect(self.nb_port), "the nginx backend")
        self.mock_port, self.mock_proc = self.start_mock("main")
        log(f"setup: backends: nginx 127.0.0.1:{self.nb_port} (small GET), mock-exchange "
            f"127.0.0.1:{self.mock_port} (ActiveSync, uploads), on core {self.core_load}")

    def start_mock(self, tag: str) -> tuple[int, subprocess.Popen]:
        ready = self.work / f"mock-{tag}.ready"
        p = self.procs.start([str(self.bins["mock"]), "--listen", "127.0.0.1:0", "--threads", "1",
                              "--ready-file", str(ready), "--idle-timeout", "3600"],
                             self.core_load, self.work / f"mock-{tag}.log")
        wait_for(lambda: ready.exists() and ready.stat().st_size > 0, "mock-exchange")
        port = int(json.loads(ready.read_text())["http"][0].rsplit(":", 1)[1])
        return port, p

    # -- proxies ----------------------------------------------------------------------------
    def start_proxy(self, name: str, backend_port: int, key: str = "ec", procs: int = 1,
                    wrap: list[str] | None = None, env: dict | None = None) -> dict:
        port = free_port()
        # A port can come back in a later rep: the directory name also counts the starts.
        self.starts = getattr(self, "starts", 0) + 1
        tag = f"{name}-{port}-{self.starts}"
        d = self.work / tag
        d.mkdir()
        s = self.server[key]
        alog = self.a.access_log == "file"
        mains: list[subprocess.Popen] = []
        if name == "cbagate":
            conf = d / "cbagate.toml"
            conf.write_text(f"""
[server]
listen = ["127.0.0.1:{port}"]
threads = 1
admin_listen = ""
[tls]
certificate = "{s['chain']}"
private_key = "{s['key']}"
client_ca = "{self.pki / 'client-roots.pem'}"
client_intermediates = "{self.pki / 'client-intermediates.pem'}"
crl = []
client_cert = "require"
[identity]
mode = "header"
[upstream]
servers = ["http://127.0.0.1:{backend_port}"]
max_idle_per_server = 64
idle_timeout = 300
[timeouts]
idle = 300
handshake = 60
request_header = 60
drain = 1
[access_log]
path = "{d / 'access.log' if alog else ''}"
[log]
level = "warn"
[[route]]
prefix = "/"
client_cert = "require"
response_timeout = 3660
""")
            for i in range(procs):
                ready = d / f"ready-{i}"
                mains.append(self.procs.start((wrap or []) + [str(self.bins["cbagate"]), "-c", str(conf),
                                               "--ready-file", str(ready)], self.core_proxy,
                                              d / f"cbagate-{i}.log",
                                              env=({**os.environ, **env} if env else None)))
                wait_for(lambda: ready.exists() and ready.stat().st_size > 0, "cbagate",
                         timeout=120 if wrap else 15)
        elif name == "nginx":
            (d / "tmp").mkdir()
            conf = d / "nginx.conf"
            conf.write_text(f"""
worker_processes {procs};
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 19900; }}
http {{
  {"access_log " + str(d / "access.log") + ";" if alog else "access_log off;"}
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  tcp_nodelay on;
  keepalive_timeout 300s;
  keepalive_requests 1000000;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_ecdh_curve X25519:prime256v1;
  ssl_client_certificate {self.ca_bundle};
  ssl_verify_depth 2;
  upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; keepalive_requests 1000000; keepalive_timeout 300s; }}
  server {{
    listen 127.0.0.1:{port} ssl backlog=4096 reuseport;
    server_name mail.lab.test;
    ssl_certificate {s['chain']}; ssl_certificate_key {s['key']};
    ssl_verify_client on;
    client_max_body_size 0;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Client-UPN $ssl_client_s_dn;
      proxy_read_timeout 3660s;
      proxy_request_buffering off;
    }}
  }}
}}
""")
            # Under a wrapper (valgrind) nginx runs as one process, without a master.
            mains.append(self.procs.start((wrap or []) + [
                self.nginx, "-e", str(d / "error.log"), "-c", str(conf), "-p", str(d), "-g",
                "daemon off; user root;" + (" master_process off;" if wrap else "")],
                self.core_proxy, d / "stdout.log"))
            wait_for(lambda: (wrap or len(children_of([mains[0].pid])) >= procs) and can_connect(port),
                     "nginx workers", timeout=120 if wrap else 15)
        else:
            conf = d / "haproxy.cfg"
            conf.write_text(f"""
global
  nbthread 1
  maxconn 9800
  ssl-default-bind-options ssl-min-ver TLSv1.2
  ssl-default-bind-curves X25519:P-256
{"  log stdout format raw local0" if alog else ""}
defaults
  mode http
  maxconn 9800
{"  log global" + chr(10) + "  option httplog" if alog else ""}
  timeout connect 5s
  timeout client 300s
  timeout server 3660s
  timeout http-request 30s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port} ssl crt {s['full']} ca-file {self.ca_bundle} verify required
  http-request set-header X-Client-UPN %[ssl_c_s_dn]
  default_backend be_app
backend be_app
  server app 127.0.0.1:{backend_port}
""")
            for i in range(procs):  # several processes share the port (SO_REUSEPORT)
                out = open(d / "access.log", "ab") if alog else subprocess.DEVNULL
                mains.append(self.procs.start((wrap or []) + [self.haproxy, "-f", str(conf), "-db"],
                                              self.core_proxy, d / f"haproxy-{i}.log", stdout=out))
                if alog:
                    out.close()
                time.sleep(0.05)
            wait_for(lambda: can_connect(port), "haproxy", timeout=120 if wrap else 15)
        for m in mains:
            if m.poll() is not None:
                fail(f"{name} exited at start, see {d}")
        pids = [m.pid for m in mains]
        if name == "nginx":
            pids += children_of(pids)
        # taskset is exec'd into the process, so the Popen pid is the proxy's own.
        return {"name": name, "port": port, "mains": mains, "pids": pids, "dir": d}

    def stop_proxy(self, px: dict) -> None:
        for m in px["mains"]:
            self.procs.stop(m)

    # -- drivers ----------------------------------------------------------------------------
    def on_load(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["taskset", "-c", self.core_load] + argv, capture_output=True,
                              text=True, preexec_fn=_raise_nofile, **kw)

    def eas_argv(self, port: int, args: list[str]) -> list[str]:
        """eas-load against the proxy on `port`: one thread, the bench PKI, a JSON report."""
        return [str(self.bins["eas_load"]), "--target", f"https://127.0.0.1:{port}",
                "--pki", str(self.pki), "--threads", "1", "--json", "--quiet"] + args

    def start_eas(self, port: int, tag: str, args: list[str]):
        """eas-load in the background on the load core, its JSON report to work/eas-TAG.json:
        (process, report path)."""
        out = self.work / f"eas-{tag}.json"
        with open(out, "w") as f:
            load = self.procs.start(self.eas_argv(port, args), self.core_load,
                                    self.work / f"eas-{tag}.err", stdout=f)
        return load, out

    def eas_load(self, port: int, args: list[str], timeout: float) -> dict:
        r = self.on_load(self.eas_argv(port, args), timeout=timeout)
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError:
            fail(f"eas-load gave no JSON (exit {r.returncode}): {r.stderr[-2000:]}")
            raise

    def s_time(self, port: int, reuse: bool, seconds: float, parallel: int) -> tuple[float, int]:
        argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-reuse" if reuse else "-new",
                "-cert", str(self.client_cert), "-key", str(self.client_key), "-CAfile",
                str(self.root), "-time", str(int(seconds))]
        if reuse:
            argv += ["-www", "/"]  # TLS 1.3 tickets arrive after the handshake: read a reply
        t0 = time.monotonic()
        ps = [subprocess.Popen(["taskset", "-c", self.core_load] + argv, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for _ in range(parallel)]
        count = 0
        for p in ps:
            out, _ = p.communicate(timeout=seconds + 60)
            m = re.findall(r"(\d+) connections in ([\d.]+) real seconds", out)
            if not m:
                fail(f"s_time gave no result: {out[-1500:]}")
            count += int(m[-1][0])
        if count == 0:
            fail(f"s_time made no connection to port {port}: {out[-1500:]}")
        # s_time's own "real seconds" are whole seconds: the group's wall time is used instead.
        total = count / (time.monotonic() - t0)
        return total, count

    def ab(self, url: str, conns: int, seconds: float, tls: bool) -> dict:
        argv = ["ab", "-q", "-k", "-c", str(conns), "-t", str(int(seconds)), "-n", "100000000"]
        if tls:
            argv += ["-E", str(self.ab_pem)]
        r = self.on_load(argv + [url], timeout=seconds + 120)
        out = r.stdout
        rps = re.search(r"^Requests per second:\s+([\d.]+)", out, re.M)
        failed = re.search(r"^Failed requests:\s+(\d+)", out, re.M)
        non2xx = re.search(r"^Non-2xx responses:\s+(\d+)", out, re.M)
        pct = dict(re.findall(r"^\s+(\d+)%\s+(\d+)", out, re.M))
        if not rps:
            fail(f"ab gave no result for {url}: {out[-1500:]} {r.stderr[-1500:]}")
        done = re.search(r"^Complete requests:\s+(\d+)", out, re.M)
        return {"rps": float(rps.group(1)), "count": int(done.group(1)) if done else 0, "p50_ms": float(pct.get("50", "nan")),
                "p99_ms": float(pct.get("99", "nan")),
                "errors": int(failed.group(1) if failed else 0) + int(non2xx.group(1) if non2xx else 0)}

    def curl_upload(self, url: str, tls: bool) -> dict:
        argv = ["curl", "-sS", "-T", str(self.upload_file), "-H", "Expect:", "-o", "/dev/null",
                "-w", "%{http_code} %{time_total} %{size_upload}"]
        if tls:
            argv += ["--cert", str(self.client_cert), "--key", str(self.client_key), "--cacert",
                     str(self.root)]
        r = self.on_load(argv + [url], timeout=300)
        code, t, size = r.stdout.split()
        if code != "200" or int(float(size)) != UPLOAD_BYTES:
            fail(f"upload to {url}: HTTP {code}, {size} bytes sent: {r.stderr}")
        return {"mb_s": UPLOAD_BYTES / float(t) / 1e6, "seconds": float(t)}

    # -- recording --------------------------------------------------------------------------
    def metric(self, mid: str, label: str, unit: str, better: str, rate: bool = False) -> dict:
        if mid not in self.metrics:
            self.metrics[mid] = {"label": label, "unit": unit, "better": better, "rate": rate,
                                 "values": {}}
        return self.metrics[mid]

    def record(self, mid: str, who: str, value: float | None, cpu_s: float | None = None,
               work: float | None = None, split: tuple[float, float] | None = None) -> None:
        """One run's value; with the proxy's CPU seconds and the work done (requests,
        handshakes, MB) also the work per proxy core-second; with `split` (user and kernel
        seconds, from timed()) also the proxy's user and kernel microseconds per unit of work."""
        v = self.metrics[mid]["values"].setdefault(who, {"runs": [], "cpu_s": [], "per_cpu_s": []})
        v["runs"].append(value)
        if cpu_s is not None:
            v["cpu_s"].append(round(cpu_s, 2))
            v["per_cpu_s"].append(work / cpu_s if (value is not None and work is not None
                                                   and cpu_s > 0.05) else None)
        if split is not None and value is not None and work:
            v.setdefault("user_us", []).append(split[0] * 1e6 / work)
            v.setdefault("kernel_us", []).append(split[1] * 1e6 / work)

    def proxy_order(self, rep: int) -> list[str]:
        ps = list(self.a.proxies)
        k = rep % len(ps)
        return ps[k:] + ps[:k]  # rotated per rep: no proxy always runs first

    # -- steps ------------------------------------------------------------------------------
    def step_crypto(self) -> None:
        secs = 1 if self.a.quick else 2
        log(f"crypto: openssl speed -seconds {secs} ecdsap256 rsa2048 ecdhx25519 on core {self.core_proxy}")
        r = subprocess.run(["taskset", "-c", self.core_proxy, "openssl", "speed", "-seconds",
                            str(secs), "ecdsap256", "rsa2048", "ecdhx25519"], capture_output=True,
                           text=True, check=True)
        out = r.stdout
        c: dict = {}
        m = re.search(r"^rsa\s+2048 bits\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", out, re.M)
        if m:
            c["rsa2048_sign_s"], c["rsa2048_verify_s"] = float(m.group(1)), float(m.group(2))
        m = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", out)
        if m:
            c["ecdsap256_sign_s"], c["ecdsap256_verify_s"] = float(m.group(1)), float(m.group(2))
        m = re.search(r"bits ecdh \(X25519\)\s+\S+\s+([\d.]+)", out)
        if m:
            c["x25519_s"] = float(m.group(1))
        if len(c) == 5:
            # Server side of one full mTLS handshake: 1 sign (server key) + 3 ECDSA verifies
            # (client leaf, its intermediate, the client's CertificateVerify) + 1 X25519.
            ev, x = c["ecdsap256_verify_s"], c["x25519_s"]
            c["handshake_limit_ec_s"] = 1 / (1 / c["ecdsap256_sign_s"] + 3 / ev + 1 / x)
            c["handshake_limit_rsa_s"] = 1 / (1 / c["rsa2048_sign_s"] + 3 / ev + 1 / x)
        c["raw"] = out
        self.results["crypto"] = c
        log("crypto: " + ", ".join(f"{k} {v:,.0f}" for k, v in c.items() if k != "raw"))

    def timed(self, px: dict, fn):
        """Runs fn() and returns (its result, the proxy's CPU seconds meanwhile); the user and
        kernel parts of those seconds stay in self.last_split for record(split=...)."""
        pids = px["pids"]
        u0, k0 = cpu_times(pids)
        r = fn()
        u1, k1 = cpu_times(pids)
        self.last_split = (u1 - u0, k1 - k0)
        return r, (u1 - u0) + (k1 - k0)

    def step_handshake(self, rep: int) -> None:
        a = self.a
        par = a.parallel
        cases = [("hs_full_ec", "ec", False, f"full mTLS handshakes/s, ECDSA P-256 (s_time ×{par})"),
                 ("hs_full_rsa", "rsa", False, f"full mTLS handshakes/s, RSA-2048 (s_time ×{par})"),
                 ("hs_resumed_ec", "ec", True,
                  f"resumed handshakes + 1 GET /s, ECDSA (s_time -reuse -www ×{par})")]
        for mid, key, reuse, label in cases:
            self.metric(mid, label, "1/s", "higher", rate=True)
            for name in self.proxy_order(rep):
                px = self.start_proxy(name, self.nb_port, key)
                (rate, count), cpu = self.timed(
                    px, lambda: self.s_time(px["port"], reuse, a.seconds, par))
                self.stop_proxy(px)
                self.record(mid, name, rate, cpu, count, split=self.last_split)
                log(f"handshake {mid} rep {rep + 1}/{a.reps} {name}: {rate:,.0f}/s "
                    f"(proxy CPU {cpu:.1f} s of {a.seconds:.0f} s)")
        # Ours: eas-load storm, every device its own certificate, all at once.
        mid = "hs_storm_ec"
        self.metric(mid, f"full mTLS handshakes/s, ECDSA, eas-load storm ({a.storm} devices, "
                    "each its own certificate, until each is answered)", "1/s", "higher", rate=True)
        for name in self.proxy_order(rep):
            px = self.start_proxy(name, self.nb_port, "ec")
            rep_j, cpu = self.timed(px, lambda: self.eas_load(
                px["port"], ["--scenario", "storm", "--devices", str(a.storm), "--duration", "60"],
                timeout=180))
            self.stop_proxy(px)
            hs = rep_j["handshakes"]
            ok = (rep_j.get("error_count", 0) == 0 and hs["full"] == a.storm
                  and hs.get("answered") == a.storm)
            # The rate runs until the last device's FolderSync is answered: with TLS 1.3 a
            # client's handshake is done once it has sent its certificate, and a proxy may verify
            # that certificate only after answering every other ClientHello (nginx and HAProxy
            # do: their clients' handshakes ended in half the time their CPU took). The proxy's
            # work, handshakes per proxy CPU second, is the fairer figure still.
            self.record(mid, name, hs["answered_per_s"] if ok else None, cpu, hs["full"])
            log(f"handshake storm rep {rep + 1}/{a.reps} {name}: {hs['full']} full, answered in "
                f"{hs['answered_window_s']:.2f} s = {hs['answered_per_s']:,.0f}/s (client-side "
                f"handshakes done in {hs['window_s']:.2f} s), errors {rep_j.get('error_count')} "
                f"(proxy CPU {cpu:.1f} s)")
            self.storm_cpu = cpu

    def step_keepalive(self, rep: int) -> None:
        a = self.a
        for conns in (1, 64):
            m_rps = f"ka_{conns}_rps"
            self.metric(m_rps, f"keep-alive Sync over mTLS, {conns} conn, req/s (eas-load)",
                        "1/s", "higher", rate=True)
            self.metric(f"ka_{conns}_p50", f"… p50 latency, {conns} conn (eas-load)", "ms", "lower")
            self.metric(f"ka_{conns}_p99", f"… p99 latency, {conns} conn (eas-load)", "ms", "lower")
            self.metric(f"ab_{conns}_rps", f"keep-alive GET over mTLS, {conns} conn, req/s (ab -k -E)",
                        "1/s", "higher", rate=True)
            self.metric(f"ab_{conns}_p99", f"… p99 latency, {conns} conn (ab, whole ms)", "ms", "lower")
            for name in self.proxy_order(rep):
                px = self.start_proxy(name, self.nb_port, "ec")
                url = f"https://127.0.0.1:{px['port']}/owa/"
                self.ab(url, min(conns, 4), 1, True)  # warm-up: TLS, backend pool
                j, cpu = self.timed(px, lambda: self.eas_load(
                    px["port"], ["--scenario", "sync", "--devices", str(conns),
                                 "--duration", str(a.seconds)], timeout=a.seconds + 120))
                errs = j.get("error_count", 0)
                sync = j["commands"].get("Sync", {})
                self.record(m_rps, name, j["requests"]["per_s"] if not errs else None, cpu,
                            j["requests"]["ok"], split=self.last_split)
                self.record(f"ka_{conns}_p50", name, sync.get("p50_ms"))
                self.record(f"ka_{conns}_p99", name, sync.get("p99_ms"))
                log(f"keep-alive {conns} conn rep {rep + 1}/{a.reps} {name} eas-load: "
                    f"{j['requests']['per_s']:,.0f} req/s p50 {sync.get('p50_ms')} p99 "
                    f"{sync.get('p99_ms')} ms errors {errs} (proxy CPU {cpu:.1f} s)")
                r, cpu = self.timed(px, lambda: self.ab(url, conns, a.seconds, True))
                self.stop_proxy(px)
                self.record(f"ab_{conns}_rps", name, r["rps"] if not r["errors"] else None, cpu,
                            r["count"], split=self.last_split)
                self.record(f"ab_{conns}_p99", name, r["p99_ms"])
                log(f"keep-alive {conns} conn rep {rep + 1}/{a.reps} {name} ab: {r['rps']:,.0f} "
                    f"req/s p99 {r['p99_ms']:.0f} ms errors {r['errors']} (proxy CPU {cpu:.1f} s)")
            # The backend alone, plain HTTP, the same ab load.
            r = self.ab(f"http://127.0.0.1:{self.nb_port}/owa/", conns, a.seconds, False)
            self.record(f"ab_{conns}_rps", "backend", r["rps"])
            self.record(f"ab_{conns}_p99", "backend", r["p99_ms"])
            log(f"keep-alive {conns} conn rep {rep + 1}/{a.reps} backend alone (plain HTTP) ab: "
                f"{r['rps']:,.0f} req/s p99 {r['p99_ms']:.0f} ms")

    def step_held(self, rep: int) -> None:
        a = self.a
        n = a.held
        procs = a.held_procs or (2 if n > 9000 else 1)
        mid = "held_kib"
        self.metric(mid, f"memory per connection holding a Ping (+ upstream leg), KiB "
                    f"({n} held, {procs} process{'es' if procs > 1 else ''} per proxy)",
                    "KiB", "lower")
        self.metric("held_errors", f"eas-load errors while holding {n} Pings", "", "lower")
        ramp = max(1.0, n / a.ramp_rate)
        for name in self.proxy_order(rep):
            mock_port, mock = self.start_mock(f"held-{name}-{rep}")  # fresh: no TIME_WAIT carry-over
            px = self.start_proxy(name, mock_port, "ec", procs)
            # A first request through the proxy so that what every connection shares is allocated.
            self.curl_get(px["port"])
            rss0 = status_kib(px["pids"], "VmRSS")
            c0 = cpu_seconds(px["pids"])
            load, out = self.start_eas(px["port"], f"held-{name}-{rep}", [
                "--scenario", "ping", "--devices", str(n), "--ramp", f"{ramp:.1f}",
                "--heartbeat", "600", "--duration", str(int(ramp + 300))])
            t0 = time.monotonic()
            deadline = t0 + ramp + 120
            held = 0
            while time.monotonic() < deadline and load.poll() is None:
                held = min(established(mock_port), established(px["port"]))
                if held >= n:
                    break
                time.sleep(0.5)
            time.sleep(1.0)  # let the last Pings settle in the proxy
            rss1 = status_kib(px["pids"], "VmRSS")
            held_now = min(established(mock_port), established(px["port"]))
            cpu = cpu_seconds(px["pids"]) - c0
            self.procs.stop(load, signal.SIGINT, timeout=120)
            try:
                j = json.loads(out.read_text())
            except json.JSONDecodeError:
                j = {}
            errs = j.get("error_count")
            per = (rss1 - rss0) / held_now if held_now >= n else None
            self.record(mid, name, per, cpu)
            self.record("held_errors", name, errs)
            log(f"held rep {rep + 1}/{a.reps} {name}: {held_now}/{n} Pings held after "
                f"{time.monotonic() - t0:.1f} s, proxy RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB "
                f"= {per if per is None else round(per, 1)} KiB/conn; eas-load errors {errs} "
                f"{j.get('errors') or ''}, eas-load {j.get('memory', {}).get('per_device_kib')} KiB/device")
            if name == "cbagate":
                self.results["checks"].setdefault("cbagate_held", []).append({
                    "devices": n, "held": held_now, "errors": errs, "error_kinds": j.get("errors"),
                    "cbagate_processes": procs,
                    "devices_with_foldersync": j.get("device_summary", {}).get("with_foldersync"),
                    "max_connected": j.get("device_summary", {}).get("max_connected"),
                    "pings_in_flight_at_end": j.get("requests", {}).get("abandoned_at_end"),
                    "eas_load_rss_max_kib": j.get("memory", {}).get("rss_max_kib")})
            self.stop_proxy(px)
            self.procs.stop(mock)

    def step_idle(self, rep: int) -> None:
        """RSS growth per idle kept-alive mTLS connection: n devices each connect (full
        handshake, own certificate), sync their folders once and then stay connected without a
        request, as a phone between requests."""
        a = self.a
        n = a.held
        mid = "idle_kib"
        self.metric(mid, f"memory per idle kept-alive mTLS connection, KiB ({n} connections)",
                    "KiB", "lower")
        ramp = max(1.0, n / (2 * a.ramp_rate))
        for name in self.proxy_order(rep):
            px = self.start_proxy(name, self.nb_port, "ec")
            self.curl_get(px["port"])
            rss0 = status_kib(px["pids"], "VmRSS")
            load, out = self.start_eas(px["port"], f"idle-{name}-{rep}", [
                "--scenario", "idle", "--devices", str(n), "--ramp", f"{ramp:.1f}",
                "--duration", str(int(ramp + 300))])
            t0 = time.monotonic()
            deadline = t0 + ramp + 120
            while time.monotonic() < deadline and load.poll() is None and established(px["port"]) < n:
                time.sleep(0.5)
            # The last devices' handshakes and FolderSyncs: until the proxy has been idle for a
            # second (less than 10 ms of CPU).
            c_prev = cpu_seconds(px["pids"])
            while time.monotonic() < deadline:
                time.sleep(1.0)
                c_now = cpu_seconds(px["pids"])
                if c_now - c_prev < 0.01:
                    break
                c_prev = c_now
            rss1 = status_kib(px["pids"], "VmRSS")
            conns = established(px["port"])
            self.procs.stop(load, signal.SIGINT, timeout=120)
            try:
                j = json.loads(out.read_text())
            except json.JSONDecodeError:
                j = {}
            synced = j.get("device_summary", {}).get("with_foldersync", 0)
            errs = j.get("error_count")
            per = (rss1 - rss0) / conns if conns >= n and synced >= n and not errs else None
            self.record(mid, name, per)
            log(f"idle rep {rep + 1}/{a.reps} {name}: {conns}/{n} connections idle after "
                f"{time.monotonic() - t0:.1f} s ({synced} synced), proxy RSS {rss0 / 1024:.1f} -> "
                f"{rss1 / 1024:.1f} MiB = {per if per is None else round(per, 1)} KiB/conn; "
                f"eas-load errors {errs} {j.get('errors') or ''}")
            self.stop_proxy(px)

    def curl_get(self, port: int) -> None:
        r = self.on_load(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cert",
                          str(self.client_cert), "--key", str(self.client_key), "--cacert",
                          str(self.root), f"https://127.0.0.1:{port}/owa/"], timeout=30)
        if r.stdout != "200":
            fail(f"GET through the proxy on {port}: {r.stdout} {r.stderr}")

    def step_upload(self, rep: int) -> None:
        a = self.a
        self.metric("up_mbs", "50 MiB upload streamed through, MB/s (curl -T)", "MB/s", "higher",
                    rate=True)
        self.metric("up_peak_kib", "… peak RSS growth during the upload, KiB", "KiB", "lower")
        uploads = 3 if a.quick else 9
        for name in self.proxy_order(rep):
            px = self.start_proxy(name, self.mock_port, "ec")
            self.curl_get(px["port"])
            rss0 = status_kib(px["pids"], "VmRSS")
            reset_hwm(px["pids"])
            # Several uploads per start, MB/s their median: one takes a fifth of a second, and
            # three of them moved by a quarter from one rep to the next (2026-12-06).
            ups, cpu = self.timed(px, lambda: [self.curl_upload(
                f"https://127.0.0.1:{px['port']}/owa/upload", True) for _ in range(uploads)])
            hwm = status_kib(px["pids"], "VmHWM")
            self.stop_proxy(px)
            mbs = statistics.median(u["mb_s"] for u in ups)
            self.record("up_mbs", name, mbs, cpu, uploads * UPLOAD_BYTES / 1e6)
            self.record("up_peak_kib", name, max(0, hwm - rss0))
            log(f"upload rep {rep + 1}/{a.reps} {name}: {mbs:.0f} MB/s ({uploads} uploads), peak RSS "
                f"growth {hwm - rss0} KiB (proxy CPU {cpu:.2f} s)")
        r = self.curl_upload(f"http://127.0.0.1:{self.mock_port}/owa/upload", False)
        self.record("up_mbs", "backend", r["mb_s"])
        log(f"upload rep {rep + 1}/{a.reps} backend alone (plain HTTP): {r['mb_s']:.0f} MB/s")

    # -- per-request counters (cbagate only) --------------------------------------------------
    def ab_n(self, port: int, n: int, keep_alive: bool, timeout: float = 600) -> int:
        """Exactly n GETs over mTLS from one ab client: on one kept-alive connection, or each on
        its own new connection (a full handshake each: ab does not resume sessions)."""
        argv = ["ab", "-q", "-c", "1", "-n", str(n), "-E", str(self.ab_pem)]
        if keep_alive:
            argv.append("-k")
        r = self.on_load(argv + [f"https://127.0.0.1:{port}/owa/"], timeout=timeout)
        done = re.search(r"^Complete requests:\s+(\d+)", r.stdout, re.M)
        failed = re.search(r"^Failed requests:\s+(\d+)", r.stdout, re.M)
        non2xx = re.search(r"^Non-2xx responses:\s+(\d+)", r.stdout, re.M)
        if not done or int(done.group(1)) != n or (failed and int(failed.group(1))) or non2xx:
            fail(f"ab -n {n} against port {port} did not complete cleanly: {r.stdout[-1500:]} {r.stderr[-800:]}")
        return n

    def sync_n(self, port: int, n: int, timeout: float = 600) -> int:
        """Exactly n ActiveSync Sync POSTs (a small WBXML body with the header) on one kept-alive
        mTLS connection, from eas-load."""
        j = self.eas_load(port, ["--scenario", "sync", "--devices", "1", "--requests", str(n),
                                 "--duration", str(int(timeout))], timeout=timeout + 60)
        ok = j.get("commands", {}).get("Sync", {}).get("ok", 0)
        if ok != n or j.get("error_count", 0):
            fail(f"eas-load --requests {n} against cbagate did not complete cleanly: {j}")
        return n

    def step_counters(self, rep: int) -> None:
        """Work per request of cbagate, counted rather than timed (robust on a busy machine):
        instructions (callgrind, or perf stat where the CPU exposes counters), allocations
        (tests/bench/alloc-count, LD_PRELOAD) and system calls (perf's raw_syscalls
        tracepoint). Keep-alive: the difference between two ab -k loads of n1 and n2 requests
        on one connection each, divided by n2 - n1 (the handshake cancels out). Handshake path:
        k connections of one GET each (connect, full mTLS handshake, request, close), per
        connection."""
        if rep > 0:
            return  # counts do not need repetitions
        a = self.a
        n1, n2 = (200, 1200) if a.quick else (500, 3000)
        k = 40 if a.quick else 150
        shim = self.build / "tests/bench/alloc-count/liballoc-count.so"
        res = self.results.setdefault("counters", {})

        def per(before: dict, after: dict, key: str, n: int) -> float | None:
            if before.get(key) is None or after.get(key) is None:
                return None
            return (after[key] - before[key]) / n

        # Allocations and system calls: a native run with the counting allocator.
        if shim.exists():
            counts = self.work / "alloc-counts.txt"
            px = self.start_proxy("cbagate", self.nb_port, "ec",
                                  env={"LD_PRELOAD": str(shim), "ALLOC_COUNT_OUT": str(counts)})
            pid = px["mains"][0].pid

            def sample() -> dict:
                before = counts.read_text().count("\n") if counts.exists() else 0
                os.kill(pid, signal.SIGUSR2)
                wait_for(lambda: counts.exists() and counts.read_text().count("\n") > before,
                         "the allocation counter")
                allocs, frees, nbytes = (int(x) for x in counts.read_text().splitlines()[-1].split())
                return {"allocs": allocs, "frees": frees, "bytes": nbytes}

            def with_syscalls(fn) -> int | None:
                out = self.work / "perf-syscalls.txt"
                try:
                    p = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter",
                                          "-p", str(pid), "-o", str(out)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                except OSError:
                    fn()
                    return None
                time.sleep(0.5)  # perf attaches
                fn()
                p.send_signal(signal.SIGINT)
                p.wait(20)
                m = re.search(r"^(\d+),,raw_syscalls:sys_enter", out.read_text() if out.exists() else "", re.M)
                return int(m.group(1)) if m else None

            self.ab_n(px["port"], 50, True)  # warm-up: backend pool, caches
            r: dict = {}
            for n in (n1, n2):
                b = sample()
                sc = with_syscalls(lambda: self.ab_n(px["port"], n, True))
                e = sample()
                r[n] = {"allocs": e["allocs"] - b["allocs"], "bytes": e["bytes"] - b["bytes"],
                        "syscalls": sc}
            d = n2 - n1
            res["keepalive_allocs_per_req"] = (r[n2]["allocs"] - r[n1]["allocs"]) / d
            res["keepalive_alloc_bytes_per_req"] = (r[n2]["bytes"] - r[n1]["bytes"]) / d
            if r[n1]["syscalls"] is not None and r[n2]["syscalls"] is not None:
                res["keepalive_syscalls_per_req"] = (r[n2]["syscalls"] - r[n1]["syscalls"]) / d
            # The same for an ActiveSync Sync (POST with a small body), from eas-load.
            self.sync_n(px["port"], 20)
            r = {}
            for n in (n1, n2):
                b = sample()
                sc = with_syscalls(lambda: self.sync_n(px["port"], n))
                e = sample()
                r[n] = {"allocs": e["allocs"] - b["allocs"], "syscalls": sc}
            res["sync_allocs_per_req"] = (r[n2]["allocs"] - r[n1]["allocs"]) / d
            if r[n1]["syscalls"] is not None and r[n2]["syscalls"] is not None:
                res["sync_syscalls_per_req"] = (r[n2]["syscalls"] - r[n1]["syscalls"]) / d
            b = sample()
            sc = with_syscalls(lambda: self.ab_n(px["port"], k, False))
            e = sample()
            res["handshake_allocs_per_conn"] = (e["allocs"] - b["allocs"]) / k
            res["handshake_alloc_bytes_per_conn"] = (e["bytes"] - b["bytes"]) / k
            if sc is not None:
                res["handshake_syscalls_per_conn"] = sc / k
            self.stop_proxy(px)
        else:
            log(f"counters: {shim} is not built; no allocation counts")

        # Instructions: callgrind counts them on any machine (no hardware counters needed).
        # The keep-alive GET also for the peers, by where the instructions go (own code,
        # OpenSSL, libc and allocator): what is left to gain is in the proxy's own part.
        if shutil.which("valgrind") and shutil.which("callgrind_control"):
            # More requests than above: a handshake's own cost is not the same every time
            # (OpenSSL's random generator reseeds, the ticket keys, the allocator), and the
            # difference of two loads must be large enough for that to vanish in it.
            c1, c2 = (200, 2200) if a.quick else (500, 5500)
            for name in [p for p in PROXIES if p in a.proxies]:
                self.count_instructions(name, res, c1, c2, k)
        else:
            log("counters: valgrind is not installed; no instruction counts")
        log("counters (per request): " + ", ".join(
            f"{key} {val:,.1f}" for key, val in res.items() if val is not None))

    def count_instructions(self, name: str, res: dict, n1: int, n2: int, k: int) -> None:
        """Instructions per keep-alive GET (and for cbagate per Sync and per new connection),
        the difference of two loads under callgrind; res gets them, with the GET's split."""
        cg = self.work / f"callgrind-{name}.out"
        px = self.start_proxy(name, self.nb_port, "ec",
                              wrap=["valgrind", "--tool=callgrind", "--quiet",
                                    f"--callgrind-out-file={cg}"])
        pid = px["mains"][0].pid

        def instructions(fn) -> dict[str, int]:
            subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)
            fn()
            before = set(self.work.glob(f"{cg.name}*"))
            subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
            new = wait_for(lambda: sorted(set(self.work.glob(f"{cg.name}*")) - before),
                           "a callgrind dump", timeout=60)
            text = wait_for(lambda: (t := new[-1].read_text()) and re.search(
                r"^(?:totals|summary):\s+(\d+)", t, re.M) and t, "the callgrind totals", timeout=60)
            out = callgrind_by_group(text)
            out["total"] = int(re.search(r"^(?:totals|summary):\s+(\d+)", text, re.M).group(1))
            return out

        def per(i1: dict, i2: dict, n: int) -> dict[str, float]:
            return {key: (i2[key] - i1[key]) / n for key in i2}

        # The first dump of a process that covers a load holds a few million instructions more
        # in its cost lines than in its "summary" (callgrind 3.19; a dump of an idle stretch
        # does not fix it, a dump of a load does): a warm-up load with a dump to throw away,
        # then the two that count, whose cost lines and summary agree.
        instructions(lambda: self.ab_n(px["port"], 20, True))
        d = n2 - n1
        i1 = instructions(lambda: self.ab_n(px["port"], n1, True))
        i2 = instructions(lambda: self.ab_n(px["port"], n2, True))
        get = per(i1, i2, d)
        suffix = "" if name == "cbagate" else f"_{name}"
        res["keepalive_instructions_per_req" + suffix] = get["total"]
        for g in ("own", *(g for g, _ in CG_GROUPS)):
            res[f"keepalive_instructions_{g}_per_req{suffix}"] = get[g]
        if name == "cbagate":
            self.sync_n(px["port"], 10)
            i1 = instructions(lambda: self.sync_n(px["port"], n1))
            i2 = instructions(lambda: self.sync_n(px["port"], n2))
            res["sync_instructions_per_req"] = per(i1, i2, d)["total"]
            kk = max(10, k // 3)
            res["handshake_instructions_per_conn"] = instructions(
                lambda: self.ab_n(px["port"], kk, False))["total"] / kk
        self.stop_proxy(px)

    # -- run --------------------------------------------------------------------------------
    def run(self) -> int:
        a = self.a
        t_start = time.monotonic()
        try:
            self.results["meta"] = self.meta()
            self.make_pki()
            self.start_backends()
            if "crypto" in a.steps:
                self.step_crypto()
            order = [s for s in STEPS if s in a.steps and s != "crypto"]
            for i, step in enumerate(order):
                for rep in range(a.reps):
                    log(f"== step {i + 1}/{len(order)} {step}, rep {rep + 1}/{a.reps}, "
                        f"load average {os.getloadavg()[0]:.2f}")
                    getattr(self, f"step_{step}")(rep)
        finally:
            self.procs.stop_all()
            self.results["meta"]["elapsed_s"] = round(time.monotonic() - t_start, 1)
            self.results["meta"]["load_average_end"] = os.getloadavg()
            self.summarize()
            (self.out / "results.json").write_text(json.dumps(self.results, indent=2) + "\n")
            if not a.keep_work:
                shutil.rmtree(self.work, ignore_errors=True)
        table = self.table()
        (self.out / "table.md").write_text(table)
        self.plot()
        print()
        print(table)
        log(f"results in {self.out} (results.json, table.md, bench.png)")
        bad = [c for c in self.results["checks"].get("cbagate_held", [])
               if c["errors"] != 0 or c["held"] < c["devices"]
               or (c["pings_in_flight_at_end"] or 0) < c["devices"]]
        if bad:
            log(f"FAILED: cbagate did not hold every Ping without errors: {bad}")
            return 1
        return 0

    def meta(self) -> dict:
        def ver(argv):
            try:
                r = subprocess.run(argv, capture_output=True, text=True)
                return (r.stdout + r.stderr).strip().splitlines()[0]
            except (OSError, IndexError):
                return None
        git = subprocess.run(["git", "-C", str(self.src), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
                "cpu_model": next((l.split(":", 1)[1].strip() for l in
                                   Path("/proc/cpuinfo").read_text().splitlines()
                                   if l.startswith("model name")), None),
                "openssl": ver(["openssl", "version"]), "nginx": ver([self.nginx, "-v"]),
                "haproxy": ver([self.haproxy, "-v"]), "git": git, "options": vars(self.a),
                "core_proxy": self.core_proxy, "core_load": self.core_load,
                "load_average_start": os.getloadavg()}

    # -- output -----------------------------------------------------------------------------
    def summarize(self) -> None:
        for m in self.metrics.values():
            for v in m["values"].values():
                v["median"] = med(v["runs"])
                if v.get("cpu_s"):
                    v["cpu_s_median"] = med(v["cpu_s"])
                    v["per_cpu_s_median"] = med(v.get("per_cpu_s") or [])
                if v.get("user_us"):
                    v["user_us_median"] = med(v["user_us"])
                    v["kernel_us_median"] = med(v["kernel_us"])

    def table(self) -> str:
        a = self.a
        names = {"cbagate": "cbagate", "nginx": "nginx", "haproxy": "HAProxy"}
        ps = [p for p in PROXIES if p in a.proxies]
        head = ["metric"] + [names[p] for p in ps] + ["backend alone"]
        ratios = [p for p in ("nginx", "haproxy") if p in ps and "cbagate" in ps]
        head += [f"cbagate/{names[p]}" for p in ratios]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

        def fmt(x, unit):
            if x is None:
                return "–"
            if unit == "ms":
                return f"{x:.2f}"
            if unit == "KiB":
                return f"{x:,.1f}"
            return f"{x:,.0f}"

        def row(label, vals, unit):
            cells = [label] + [fmt(vals.get(p), unit) for p in ps] + [fmt(vals.get("backend"), unit)]
            for p in ratios:
                c, o = vals.get("cbagate"), vals.get(p)
                cells.append(f"{c / o:.2f}" if c is not None and o else "–")
            lines.append("| " + " | ".join(cells) + " |")

        for mid, m in self.metrics.items():
            vals = {w: v.get("median") for w, v in m["values"].items()}
            row(m["label"], vals, m["unit"])
        per_rows = [(m["label"], {w: v.get("per_cpu_s_median") for w, v in m["values"].items()
                                  if w != "backend"}, m["unit"])
                    for m in self.metrics.values() if m["rate"]]
        per_rows = [r for r in per_rows if any(x is not None for x in r[1].values())]
        if per_rows:
            lines.append("")
            lines.append("Work per proxy core-second (requests, handshakes or MB per second of the "
                         "proxy's own CPU time, from /proc/PID/stat), beside the raw rates above:")
            lines.append("")
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            for label, vals, unit in per_rows:
                row(label, vals, unit)
        split_rows = [(m["label"], m["values"]) for m in self.metrics.values()
                      if any(v.get("user_us_median") is not None for v in m["values"].values())]
        if split_rows:
            lines.append("")
            lines.append("The proxy's CPU per request or handshake, microseconds in user space + in "
                         "the kernel (/proc/PID/stat utime + stime over the load, medians); the ratios "
                         "compare the user-space parts, then the totals:")
            lines.append("")
            shead = ["metric"] + [names[p] for p in ps] + [f"cbagate/{names[p]}" for p in ratios]
            lines.append("| " + " | ".join(shead) + " |")
            lines.append("|" + "---|" * len(shead))
            for label, vals in split_rows:
                cells = [label]
                for p in ps:
                    u, k = vals.get(p, {}).get("user_us_median"), vals.get(p, {}).get("kernel_us_median")
                    cells.append(f"{u:,.1f} + {k:,.1f}" if u is not None else "–")
                cu, ck = (vals.get("cbagate", {}).get(x) for x in ("user_us_median", "kernel_us_median"))
                for p in ratios:
                    ou, ok = (vals.get(p, {}).get(x) for x in ("user_us_median", "kernel_us_median"))
                    cells.append(f"{cu / ou:.2f}, {(cu + ck) / (ou + ok):.2f}"
                                 if cu is not None and ou else "–")
                lines.append("| " + " | ".join(cells) + " |")
        c = self.results.get("crypto", {})
        notes = [f"\nMedians of {a.reps} run(s), {a.seconds:.0f} s each; proxy on core "
                 f"{self.core_proxy}, load and backends on core {self.core_load}; "
                 f"{self.results['meta'].get('cpu_model')}, {self.results['meta'].get('openssl')}, "
                 f"{self.results['meta'].get('nginx')}, {self.results['meta'].get('haproxy')}."]
        if "handshake_limit_ec_s" in c:
            notes.append(
                f"Crypto limit (openssl speed, one core): ECDSA P-256 sign {c['ecdsap256_sign_s']:,.0f}/s "
                f"verify {c['ecdsap256_verify_s']:,.0f}/s; RSA-2048 sign {c['rsa2048_sign_s']:,.0f}/s "
                f"verify {c['rsa2048_verify_s']:,.0f}/s; X25519 {c['x25519_s']:,.0f}/s; hence at most "
                f"{c['handshake_limit_ec_s']:,.0f} (ECDSA) / {c['handshake_limit_rsa_s']:,.0f} (RSA) "
                "full mTLS handshakes/s per core (1 sign + 3 verifies + 1 X25519).")
        held = self.results["checks"].get("cbagate_held", [])
        if held:
            notes.append(
                "cbagate, held Pings per run: " + "; ".join(
                    f"{c['held']}/{c['devices']} held ({c['cbagate_processes']} process(es)), "
                    f"{c['pings_in_flight_at_end']} Pings in flight at eas-load's end, "
                    f"{c['max_connected']} devices connected, eas-load errors {c['errors']}"
                    for c in held) + ".")
        cnt = self.results.get("counters", {})
        if cnt:
            def c(key, fmt="{:,.0f}"):
                return fmt.format(cnt[key]) if cnt.get(key) is not None else "–"
            notes.append(
                "cbagate, counted per request (not timed; tests/bench/README.md \"Counters\"): "
                f"keep-alive GET: {c('keepalive_instructions_per_req')} instructions, "
                f"{c('keepalive_allocs_per_req', '{:,.1f}')} allocations "
                f"({c('keepalive_alloc_bytes_per_req')} bytes), "
                f"{c('keepalive_syscalls_per_req', '{:,.1f}')} system calls; "
                f"keep-alive ActiveSync Sync (POST, small body): "
                f"{c('sync_instructions_per_req')} instructions, "
                f"{c('sync_allocs_per_req', '{:,.1f}')} allocations, "
                f"{c('sync_syscalls_per_req', '{:,.1f}')} system calls; "
                f"new connection (connect, full mTLS handshake, one GET, close): "
                f"{c('handshake_instructions_per_conn')} instructions, "
                f"{c('handshake_allocs_per_conn')} allocations "
                f"({c('handshake_alloc_bytes_per_conn')} bytes), "
                f"{c('handshake_syscalls_per_conn', '{:,.1f}')} system calls.")
        if cnt.get("keepalive_instructions_own_per_req") is not None:
            parts = []
            for p in ps:
                sfx = "" if p == "cbagate" else f"_{p}"
                if cnt.get(f"keepalive_instructions_per_req{sfx}") is None:
                    continue
                parts.append(f"{names[p]} {cnt[f'keepalive_instructions_per_req{sfx}']:,.0f} "
                             f"({cnt[f'keepalive_instructions_own_per_req{sfx}']:,.0f} / "
                             f"{cnt[f'keepalive_instructions_openssl_per_req{sfx}']:,.0f} / "
                             f"{cnt[f'keepalive_instructions_libc_alloc_per_req{sfx}']:,.0f})")
            notes.append("Instructions per keep-alive GET, all three under callgrind (ab -k, one "
                         "connection; the proxy's own code / OpenSSL / libc and allocator): "
                         + "; ".join(parts) + ".")
        notes.append("Backend alone: plain HTTP to the same backend (nginx for GET, mock-exchange "
                     "for the upload) with the same driver. Ratios > 1 are better for rates, < 1 "
                     "for latency and memory.")
        return "\n".join(lines) + "\n" + "\n".join(notes) + "\n"

    def plot(self) -> None:
        ps = [p for p in PROXIES if p in self.a.proxies]
        names = {"cbagate": "cbagate", "nginx": "nginx", "haproxy": "HAProxy"}

        def v(mid, who):
            m = self.metrics.get(mid)
            x = m and m["values"].get(who, {}).get("median")
            return x if x is not None else 0

        dat = self.out / "bench.dat"
        rows = ["# proxy ka1_rps ka64_rps ab64_rps ka1_p99 ka64_p99 hs_ec hs_rsa hs_resumed hs_storm"]
        for p in ps:
            rows.append(f'"{names[p]}" ' + " ".join(str(v(m, p)) for m in (
                "ka_1_rps", "ka_64_rps", "ab_64_rps", "ka_1_p99", "ka_64_p99", "hs_full_ec",
                "hs_full_rsa", "hs_resumed_ec", "hs_storm_ec")))
        dat.write_text("\n".join(rows) + "\n")
        gp = self.out / "bench.gp"
        gp.write_text(f"""
set terminal pngcairo size 1500,560 font "sans,10"
set output "{self.out / 'bench.png'}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set key outside below horizontal
set multiplot layout 1,3 title "cbagate, nginx, HAProxy: one proxy core, mTLS (TLS 1.3), {self.results['meta'].get('date')}"
set title "keep-alive requests/s"
plot "{dat}" using 3:xtic(1) title "64 conn (eas-load)", "" using 4 title "64 conn (ab)", "" using 2 title "1 conn (eas-load)"
set title "keep-alive p99 latency, ms (eas-load)"
plot "{dat}" using 6:xtic(1) title "64 conn", "" using 5 title "1 conn"
set title "mTLS handshakes/s"
plot "{dat}" using 7:xtic(1) title "full, ECDSA", "" using 8 title "full, RSA-2048", "" using 10 title "full, storm (eas-load)", "" using 9 title "resumed + GET"
unset multiplot
""")
        r = subprocess.run(["gnuplot", str(gp)], capture_output=True, text=True)
        if r.returncode != 0 and "pngcairo" in r.stderr:  # a gnuplot built without cairo
            gp.write_text(gp.read_text().replace('pngcairo size 1500,560 font "sans,10"',
                                                 "png size 1500,560"))
            r = subprocess.run(["gnuplot", str(gp)], capture_output=True, text=True)
        if r.returncode != 0:
            log(f"gnuplot failed: {r.stderr[-1000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description="cbagate vs nginx vs HAProxy (tests/bench/README.md)")
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--cbagate", help="the cbagate binary (default BUILD/proxy/cbagate)")
    ap.add_argument("--out", help="results dir (default BUILD/bench-results/<timestamp>)")
    ap.add_argument("--quick", action="store_true", help="smoke: 1 rep, 3 s loads, --held 500")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--seconds", type=float, help="duration of each load (default 10, quick 3)")
    ap.add_argument("--held", type=int, help="held Pings (default 10000, quick 500)")
    ap.add_argument("--held-procs", type=int, default=0,
                    help="processes per proxy for the held step (default 2 above 9000 Pings, else 1)")
    ap.add_argument("--ramp-rate", type=float, default=200.0,
                    help="devices started per second in the held step (default 200)")
    ap.add_argument("--storm", type=int, help="devices in the eas-load storm (default 1000, quick 200)")
    ap.add_argument("--parallel", type=int, default=16, help="parallel s_time processes (default 16)")
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--access-log", choices=("off", "file"), default="off")
    ap.add_argument("--keep-work", action="store_true", help="keep the temp dir (configs, logs)")
    a = ap.parse_args()
    a.reps = a.reps or (1 if a.quick else 3)
    a.seconds = a.seconds or (3.0 if a.quick else 10.0)
    a.held = a.held or (500 if a.quick else 10000)
    a.storm = a.storm or (200 if a.quick else 1000)
    a.proxies = [p for p in a.proxies.split(",") if p]
    a.steps = [s for s in a.steps.split(",") if s]
    for p in a.proxies:
        if p not in PROXIES:
            ap.error(f"unknown proxy {p}")
    for s in a.steps:
        if s not in STEPS:
            ap.error(f"unknown step {s}")
    if os.geteuid() != 0:
        print("bench: run as root (nginx and HAProxy configs use user root; /proc/PID/clear_refs)",
              file=sys.stderr)
    b = Bench(a)
    log(f"bench: proxies {', '.join(a.proxies)}; steps {', '.join(a.steps)}; {a.reps} rep(s), "
        f"{a.seconds:.0f} s loads, {a.held} held Pings; results in {b.out}")

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return b.run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

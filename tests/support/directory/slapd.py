#!/usr/bin/env python3
"""A throwaway Active Directory look-alike: OpenLDAP slapd on 127.0.0.1 with AD's attribute types
(ad-schema.ldif beside this file), the domain DC=lab,DC=test, CN=Users and the service account
cbagate binds as. Used by the directory tests (tests/integration/directory/) and by
`docker/lab --directory`:

  slapd.py start DIR LDIF... [--port N]   start slapd in DIR (daemon; DIR/slapd.pid, DIR/env.sh
                                          with LAB_LDAP_URI, LAB_LDAP_BIND_DN, LAB_LDAP_PASSWORD_FILE)
  slapd.py stop DIR                       stop the slapd started in DIR, by its PID file
"""
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "ad-schema.ldif")
BASE_DN = "DC=lab,DC=test"
SVC_DN = "CN=svc-cbagate,CN=Users,DC=lab,DC=test"
SVC_PW = "svc-lab-password"
ROOT_DN = "cn=admin,DC=lab,DC=test"
ROOT_PW = "admin-lab-password"
SBIN = "/usr/sbin"


def run(args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slapd:
    """slapd on 127.0.0.1; everything under `workdir`/<name>. stop() ends only our PID."""

    def __init__(self, workdir, name, ldif_texts, tls=None, sasl=None, env=None, port=None):
        self.dir = os.path.join(workdir, name)
        os.makedirs(os.path.join(self.dir, "slapd.d"))
        os.makedirs(os.path.join(self.dir, "db"))
        self.pid = None
        cfg = ["dn: cn=config", "objectClass: olcGlobal", "cn: config",
               f"olcPidFile: {self.dir}/slapd.pid", "olcLogLevel: none"]
        if tls:
            cfg += [f"olcTLSCertificateFile: {tls['cert']}", f"olcTLSCertificateKeyFile: {tls['key']}",
                    f"olcTLSCACertificateFile: {tls['ca']}"]
        if sasl:
            cfg += [f"olcSaslHost: {sasl['host']}", f"olcAuthzRegexp: {sasl['map']}"]
        cfg = "\n".join(cfg) + "\n\n" + f"""dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

include: file://{SCHEMA}

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {BASE_DN}
olcRootDN: {ROOT_DN}
olcRootPW: {ROOT_PW}
olcDbDirectory: {self.dir}/db
olcDbMaxSize: 67108864
olcDbIndex: objectClass eq
olcDbIndex: userPrincipalName eq
olcDbIndex: altSecurityIdentities eq
olcAccess: {{0}}to attrs=userPassword by anonymous auth by * none
olcAccess: {{1}}to dn.base="" by * read
olcAccess: {{2}}to * by users read by * none
"""
        with open(os.path.join(self.dir, "config.ldif"), "w") as f:
            f.write(cfg)
        run([f"{SBIN}/slapadd", "-n0", "-F", f"{self.dir}/slapd.d", "-l", f"{self.dir}/config.ldif"])
        base = f"""dn: {BASE_DN}
objectClass: domain
dc: lab

dn: CN=Users,{BASE_DN}
objectClass: organizationalRole
cn: Users

dn: {SVC_DN}
objectClass: inetOrgPerson
cn: svc-cbagate
sn: svc-cbagate
userPassword: {SVC_PW}

"""
        with open(os.path.join(self.dir, "data.ldif"), "w") as f:
            f.write(base + "".join(ldif_texts))
        run([f"{SBIN}/slapadd", "-q", "-n1", "-F", f"{self.dir}/slapd.d", "-l", f"{self.dir}/data.ldif"])
        self.env = dict(os.environ, **(env or {}))
        for attempt in range(5):
            self.port = port or free_port()
            self.uri = f"ldap://127.0.0.1:{self.port}"
            r = subprocess.run([f"{SBIN}/slapd", "-h", self.uri + "/", "-F", f"{self.dir}/slapd.d"],
                               capture_output=True, text=True, env=self.env)
            if r.returncode == 0:
                break
            if attempt == 4 or port:
                raise AssertionError(f"slapd did not start on {self.uri}: {r.stderr.strip()}")
        deadline = time.monotonic() + 20
        while True:
            try:
                with open(os.path.join(self.dir, "slapd.pid")) as f:
                    self.pid = int(f.read().strip())
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise AssertionError("slapd did not come up")
                time.sleep(0.02)

    def pause(self):
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.pid, signal.SIGCONT)

    def modify(self, ldif):
        subprocess.run(["ldapmodify", "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PW],
                       input=ldif, check=True, capture_output=True, text=True)

    def stop(self):
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            # A stopped daemon is reaped by PID 1; a zombie still answers kill(0).
            try:
                with open(f"/proc/{self.pid}/stat") as f:
                    if f.read().split(") ", 1)[1].startswith("Z"):
                        break
            except (FileNotFoundError, IndexError):
                break
            time.sleep(0.02)
        else:
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None


def password_file(workdir):
    path = os.path.join(workdir, "directory-password")
    with open(path, "w") as f:
        f.write(SVC_PW + "\n")
    os.chmod(path, 0o600)
    return path


def _main(argv):
    usage = "usage: slapd.py start DIR LDIF... [--port N] | slapd.py stop DIR"
    if len(argv) < 2 or argv[0] not in ("start", "stop"):
        print(usage, file=sys.stderr)
        return 2
    cmd, workdir = argv[0], os.path.abspath(argv[1])
    if cmd == "stop":
        pidfile = os.path.join(workdir, "slapd", "slapd.pid")
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return 0
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if workdir.encode() not in f.read():
                    print(f"slapd.py: pid {pid} is not the slapd of {workdir}; left alone", file=sys.stderr)
                    return 0
        except OSError:
            return 0
        s = Slapd.__new__(Slapd)
        s.pid = pid
        s.stop()
        print(f"slapd.py: stopped slapd pid {pid}", file=sys.stderr)
        return 0
    args, port = argv[2:], None
    if "--port" in args:
        i = args.index("--port")
        port = int(args[i + 1])
        del args[i:i + 2]
    texts = []
    for path in args:
        with open(path) as f:
            texts.append(f.read())
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(os.path.join(workdir, "slapd")):
        import shutil
        shutil.rmtree(os.path.join(workdir, "slapd"))
    s = Slapd(workdir, "slapd", texts, port=port)
    pw = password_file(workdir)
    with open(os.path.join(workdir, "env.sh"), "w") as f:
        f.write(f"export LAB_LDAP_URI={s.uri}\nexport LAB_LDAP_BASE_DN='{BASE_DN}'\n"
                f"export LAB_LDAP_BIND_DN='{SVC_DN}'\nexport LAB_LDAP_PASSWORD_FILE={pw}\n"
                f"export LAB_LDAP_PID={s.pid}\n")
    print(f"slapd.py: directory {BASE_DN} on {s.uri} (pid {s.pid})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

"""A throwaway Active Directory look-alike for the directory-mapping tests (issue 12).

- DirectoryLab: client certificates issued by the dev PKI's issuing CA (openssl CLI) for every
  verdict, and the users.ldif of their accounts. The altSecurityIdentities strings are computed
  here from the openssl CLI's output, independently of cbagate's C++ code.
- Slapd (tests/support/directory/slapd.py): OpenLDAP slapd on 127.0.0.1 at a port chosen at run
  time, with the AD attribute types of tests/support/directory/ad-schema.ldif; optional StartTLS
  and SASL GSSAPI. Stopped by PID.
"""
import base64
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(REPO, "tests", "support", "directory"))
from slapd import (BASE_DN, SVC_DN, SVC_PW, ROOT_DN, ROOT_PW, Slapd,  # noqa: E402,F401
                   free_port, password_file)
SID_PREFIX = "S-1-5-21-1004336348-1177238915-682003330-"
NEVER = 9223372036854775807


def run(args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def filetime(unix_seconds):
    return (int(unix_seconds) + 11644473600) * 10_000_000


def sid_bytes(sid):
    parts = [int(p) for p in sid.split("-")[1:]]
    rev, auth, subs = parts[0], parts[1], parts[2:]
    out = bytes([rev, len(subs)]) + auth.to_bytes(6, "big")
    for s in subs:
        out += s.to_bytes(4, "little")
    return out


def ad_dn(pem_path, which):
    """AD's DN form (certificate order, no spaces) from the openssl CLI ([reference] 1a)."""
    out = run(["openssl", "x509", "-in", pem_path, "-noout", f"-{which}", "-nameopt",
               "sep_comma_plus,sname,esc_2253,esc_ctrl,esc_msb,utf8,dump_nostr,dump_der"])
    return out.strip().split("=", 1)[1]


def cert_facts(pem_path):
    serial = run(["openssl", "x509", "-in", pem_path, "-noout", "-serial"]).strip().split("=")[1]
    if len(serial) % 2:
        serial = "0" + serial
    sha1 = run(["openssl", "x509", "-in", pem_path, "-noout", "-fingerprint", "-sha1"]).strip()
    sha1 = sha1.split("=", 1)[1].replace(":", "").upper()
    ski_out = run(["openssl", "x509", "-in", pem_path, "-noout", "-ext", "subjectKeyIdentifier"])
    ski = ""
    lines = [l.strip() for l in ski_out.splitlines()]
    if len(lines) >= 2:
        ski = lines[1].replace(":", "").upper()
    reversed_serial = "".join(reversed([serial[i:i + 2] for i in range(0, len(serial), 2)])).upper()
    issuer = ad_dn(pem_path, "issuer")
    subject = ad_dn(pem_path, "subject")
    return {
        "issuer": issuer,
        "subject": subject,
        "sr": f"X509:<I>{issuer}<SR>{reversed_serial}",
        "ski": f"X509:<SKI>{ski}",
        "sha1": f"X509:<SHA1-PUKEY>{sha1}",
        "weak": f"X509:<I>{issuer}<S>{subject}",
    }


class DirectoryLab:
    """Certificates and accounts for every verdict. users[name] = dict(upn=, cert=<prefix>,
    expect=<verdict>); `cert` + "-chain.pem" holds key, leaf and issuing CA (harness.Client)."""

    def __init__(self, workdir, pki):
        self.dir = os.path.join(workdir, "directory-lab")
        os.makedirs(self.dir, exist_ok=True)
        self.pki = pki
        self.users = {}
        self.entries = []
        now = time.time()
        ca, key = os.path.join(pki, "ca", "issuing.pem"), os.path.join(pki, "ca", "issuing.key")
        root, root_key = os.path.join(pki, "ca", "root.pem"), os.path.join(pki, "ca", "root.key")
        rid = iter(range(1103, 1200))

        def account(name, upn, uac=512, lockout=0, expires=NEVER, alt=(), sid=None):
            sid = sid or SID_PREFIX + str(next(rid))
            self.entries.append(dict(name=name, upn=upn, uac=uac, lockout=lockout,
                                     expires=expires, alt=list(alt), sid=sid))
            return sid

        # name: (upn, serial, cert SID, issuer)
        specs = {
            "alice": ("alice@lab.test", "0x2B0000000011AC0000000012", None, "issuing"),
            "bob": ("bob@lab.test", None, "bob", "issuing"),
            "carol": ("carol@lab.test", None, None, "issuing"),
            "dave": ("dave@lab.test", None, None, "issuing"),
            "eve": ("eve@lab.test", None, None, "issuing"),
            "fiona": ("fiona@lab.test", None, None, "issuing"),
            "gary": ("gary@lab.test", "0x81236B9D39CE928D4AB6506D86CADCFF", None, "issuing"),
            "hank": ("hank@lab.test", None, None, "issuing"),
            "mallory": ("alice@lab.test", None, None, "issuing"),
            "bobsid": ("bob@lab.test", None, "alice", "issuing"),
            "inject": ("*)(userPrincipalName=alice@lab.test", None, None, "issuing"),
            "twin": ("twin@lab.test", None, None, "issuing"),
            "nobody": ("nobody@lab.test", None, None, "issuing"),
            "rooted": ("rooted@lab.test", None, None, "root"),
        }
        self.users = {}
        self.sids = {"alice": SID_PREFIX + "1103", "bob": SID_PREFIX + "1104"}
        facts = {}
        for name, (upn, serial, cert_sid, issuer) in specs.items():
            facts[name] = self.issue(name, upn, serial, cert_sid, issuer)
        f = facts
        account("alice", "alice@lab.test", alt=[f["alice"]["sr"]], sid=self.sids["alice"])
        account("bob", "bob@lab.test", sid=self.sids["bob"])
        account("carol", "carol@lab.test", uac=514, alt=[f["carol"]["sr"]])
        account("dave", "dave@lab.test", alt=[f["dave"]["weak"], "X509:<RFC822>dave@lab.test"])
        account("eve", "eve@lab.test", alt=[f["eve"]["sha1"]])
        account("fiona", "fiona@lab.test", alt=[f["fiona"]["ski"]])
        account("gary", "gary@lab.test", lockout=filetime(now), alt=[f["gary"]["sr"]])
        account("hank", "hank@lab.test", expires=filetime(now - 86400), alt=[f["hank"]["sr"]])
        account("twin", "twin@lab.test", alt=[f["twin"]["sr"]])
        account("twin2", "twin@lab.test", alt=[f["twin"]["sr"]])
        account("rooted", "rooted@lab.test", alt=[f["rooted"]["sr"]])
        self.ldif = os.path.join(self.dir, "users.ldif")
        with open(self.ldif, "w") as out:
            out.write(self.users_ldif())
        self.expect = {
            "alice": "allowed", "bob": "allowed", "carol": "disabled", "dave": "no_strong_mapping",
            "eve": "allowed", "fiona": "allowed", "gary": "locked_out", "hank": "account_expired",
            "mallory": "no_strong_mapping", "bobsid": "sid_mismatch", "inject": "not_found",
            "twin": "ambiguous", "nobody": "not_found", "rooted": "allowed",
        }
        self.issuing_der = run_bytes(["openssl", "x509", "-in", ca, "-outform", "DER"])
        self.root_der = run_bytes(["openssl", "x509", "-in", root, "-outform", "DER"])

    def issue(self, name, upn, serial=None, cert_sid=None, issuer="issuing"):
        """A client certificate for `upn` (openssl CLI; None = no UPN at all, only an e-mail
        SAN); returns its altSecurityIdentities strings. `cert_sid` names whose SID the SID
        extension carries (self.sids)."""
        pki = self.pki
        ca, key = os.path.join(pki, "ca", "issuing.pem"), os.path.join(pki, "ca", "issuing.key")
        root, root_key = os.path.join(pki, "ca", "root.pem"), os.path.join(pki, "ca", "root.key")
        prefix = os.path.join(self.dir, name)
        # Positive, high bit clear (gary's fixed serial has it set: the "00" sign byte case).
        serial = serial or "0x1" + os.urandom(11).hex().upper()
        ext = [
            "[v3]",
            "basicConstraints = critical,CA:FALSE",
            "keyUsage = critical,digitalSignature",
            "extendedKeyUsage = clientAuth",
            "subjectKeyIdentifier = hash",
            "subjectAltName = @alt",
        ]
        if cert_sid:
            ext.append("1.3.6.1.4.1.311.25.2 = ASN1:SEQUENCE:sid_gns")
        ext += ["[alt]", f"otherName.1 = 1.3.6.1.4.1.311.20.2.3;UTF8:{upn}" if upn
                else f"email.1 = {name}@devices.lab.test"]
        if cert_sid:
            ext += ["[sid_gns]", "gn = IMPLICIT:0C,SEQUENCE:sid_on", "[sid_on]",
                    "type_id = OID:1.3.6.1.4.1.311.25.2.1",
                    f"value = EXPLICIT:0C,OCTETSTRING:{self.sids[cert_sid]}"]
        with open(prefix + ".cnf", "w") as f:
            f.write("\n".join(ext) + "\n")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", prefix + ".key", "-subj", f"/CN={name}", "-out", prefix + ".csr"])
        signer, signer_key = (ca, key) if issuer == "issuing" else (root, root_key)
        run(["openssl", "x509", "-req", "-in", prefix + ".csr", "-CA", signer, "-CAkey", signer_key,
             "-set_serial", serial, "-days", "30", "-extfile", prefix + ".cnf", "-extensions", "v3",
             "-out", prefix + ".pem"])
        with open(prefix + "-chain.pem", "w") as out:
            for part in (prefix + ".key", prefix + ".pem") + ((ca,) if issuer == "issuing" else ()):
                with open(part) as f:
                    out.write(f.read())
        facts = cert_facts(prefix + ".pem")
        self.users[name] = dict(upn=upn, cert=prefix, facts=facts)
        return facts

    def add_account(self, name, upn, alt=(), uac=512, sid=None):
        """An extra account (after construction): its LDIF, for Slapd."""
        e = dict(name=name, upn=upn, uac=uac, lockout=0, expires=NEVER, alt=list(alt),
                 sid=sid or SID_PREFIX + str(2000 + len(self.entries)))
        self.entries.append(e)
        return self.entry_ldif(e)

    def entry_ldif(self, e):
        lines = [
            f"dn: CN={e['name']},CN=Users,{BASE_DN}",
            "objectClass: inetOrgPerson", "objectClass: cbagateTestUser",
            f"cn: {e['name']}", f"sn: {e['name']}",
            f"sAMAccountName: {e['name']}", "sAMAccountType: 805306368",
        ] + ([f"userPrincipalName: {e['upn']}"] if e["upn"] else []) + [
            "objectSid:: " + base64.b64encode(sid_bytes(e["sid"])).decode(),
            f"userAccountControl: {e['uac']}",
            f"accountExpires: {e['expires']}",
            f"lockoutTime: {e['lockout']}",
        ]
        lines += [f"altSecurityIdentities: {a}" for a in e["alt"]]
        return "\n".join(lines) + "\n\n"

    def users_ldif(self):
        return "".join(self.entry_ldif(e) for e in self.entries)

    def ntauth_ldif(self, ders):
        out = []
        for dn, cn in ((f"CN=Configuration,{BASE_DN}", "Configuration"),
                       (f"CN=Services,CN=Configuration,{BASE_DN}", "Services"),
                       (f"CN=Public Key Services,CN=Services,CN=Configuration,{BASE_DN}",
                        "Public Key Services")):
            out.append(f"dn: {dn}\nobjectClass: organizationalRole\ncn: {cn}\n")
        e = (f"dn: CN=NTAuthCertificates,CN=Public Key Services,CN=Services,CN=Configuration,{BASE_DN}\n"
             "objectClass: organizationalRole\nobjectClass: pkiCA\ncn: NTAuthCertificates\n")
        for der in ders:
            e += "cACertificate;binary:: " + base64.b64encode(der).decode() + "\n"
        out.append(e)
        return "\n".join(out) + "\n"


def run_bytes(args):
    return subprocess.run(args, check=True, capture_output=True).stdout

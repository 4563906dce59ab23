#include "identity/ad_certificate.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <openssl/objects.h>

#include "identity/trust_audit.hpp"
#include "identity/verifier.hpp"
#include "test_certs.hpp"

using cbagate::identity::client_identity;
using cbagate::identity::rejection;
using cbagate::identity::verifier;
using cbagate::identity::verifier_options;
namespace id = cbagate::identity;
namespace t = cbagate::identity::test;
namespace ossl = cbagate::ossl;

namespace {

constexpr std::int64_t day = 86400;

// DER: tag, short or long length, content.
std::string tlv(unsigned char tag, const std::string& content) {
  std::string out(1, static_cast<char>(tag));
  const std::size_t n = content.size();
  if (n < 128) {
    out += static_cast<char>(n);
  } else if (n < 256) {
    out += '\x81';
    out += static_cast<char>(n);
  } else {
    out += '\x82';
    out += static_cast<char>(n >> 8);
    out += static_cast<char>(n & 0xFF);
  }
  return out + content;
}

std::string oid_der(const char* dotted) {
  ASN1_OBJECT* o = OBJ_txt2obj(dotted, 1);
  const int len = i2d_ASN1_OBJECT(o, nullptr);
  std::string out(static_cast<std::size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  i2d_ASN1_OBJECT(o, &p);
  ASN1_OBJECT_free(o);
  return out;
}

// The SID security extension as AD CS writes it ([MS-WCCE] 2.2.2.7.7.4): GeneralNames with one
// otherName 1.3.6.1.4.1.311.25.2.1 whose [0] EXPLICIT value is an OCTET STRING holding the SID
// string in ASCII.
std::string sid_extension(const std::string& sid, const char* type_id = "1.3.6.1.4.1.311.25.2.1") {
  return tlv(0x30, tlv(0xA0, oid_der(type_id) + tlv(0xA0, tlv(0x04, sid))));
}

std::string template_v2(const char* oid) {
  return tlv(0x30, oid_der(oid) + tlv(0x02, std::string("\x64", 1)) + tlv(0x02, std::string(1, '\0')));
}

std::string bmp(const std::string& ascii) {
  std::string content;
  for (const char c : ascii) {
    content += '\0';
    content += c;
  }
  return tlv(0x1E, content);
}

// root -> issuing (A, B) -> leaves, all in memory.
struct tiered_pki {
  t::temp_dir dir;
  ossl::evp_pkey_ptr root_key = t::make_key();
  ossl::evp_pkey_ptr a_key = t::make_key();
  ossl::evp_pkey_ptr b_key = t::make_key();
  ossl::evp_pkey_ptr leaf_key = t::make_key();
  ossl::x509_ptr root, a, b;

  tiered_pki() {
    t::cert_spec ca;
    ca.ca = true;
    ca.eku = "";
    ca.not_after = t::now() + 3650 * day;
    ca.subject = {{NID_domainComponent, V_ASN1_IA5STRING, "test"},
                  {NID_domainComponent, V_ASN1_IA5STRING, "lab"},
                  {NID_commonName, V_ASN1_UTF8STRING, "Lab Root"}};
    root = t::make_cert(ca, root_key.get());
    ca.subject.back().bytes = "Issuing A";
    ca.serial = 2;
    a = t::make_cert(ca, a_key.get(), root.get(), root_key.get());
    ca.subject.back().bytes = "Issuing B";
    ca.serial = 3;
    b = t::make_cert(ca, b_key.get(), root.get(), root_key.get());
    dir.write("root.pem", t::pem_of(root.get()));
    dir.write("a.pem", t::pem_of(a.get()));
    dir.write("both.pem", t::pem_of(a.get()) + t::pem_of(b.get()));
  }

  ossl::x509_ptr leaf(X509* issuer, EVP_PKEY* issuer_key) {
    return leaf(issuer, issuer_key, user("alice@lab.test"));
  }
  ossl::x509_ptr leaf(X509* issuer, EVP_PKEY* issuer_key, t::cert_spec spec) {
    return t::make_cert(spec, leaf_key.get(), issuer, issuer_key);
  }

  static t::cert_spec user(const std::string& upn) {
    t::cert_spec spec;
    spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, "alice"}};
    spec.upns = {{V_ASN1_UTF8STRING, upn}};
    spec.serial = 0x1234;
    return spec;
  }

  std::shared_ptr<const verifier> make(verifier_options o) {
    o.client_ca_file = (dir.path() / "root.pem").string();
    o.client_intermediates_file = (dir.path() / "both.pem").string();
    std::string error;
    auto v = verifier::make(o, &error);
    REQUIRE_MESSAGE(v.has_value(), error);
    return v.value();
  }
};

}  // namespace

TEST_CASE("ad_dn: certificate order, Windows keywords, no spaces, quoting") {
  tiered_pki pki;
  CHECK(id::ad_dn(X509_get_subject_name(pki.a.get())) == "DC=test,DC=lab,CN=Issuing A");
  t::cert_spec spec;
  spec.subject = {{NID_countryName, V_ASN1_PRINTABLESTRING, "US"},
                  {NID_stateOrProvinceName, V_ASN1_UTF8STRING, "WA"},
                  {NID_organizationName, V_ASN1_UTF8STRING, "Lab, Inc."},
                  {NID_pkcs9_emailAddress, V_ASN1_IA5STRING, "a@lab.test"},
                  {NID_commonName, V_ASN1_UTF8STRING, "Eve\x01"}};
  auto x = t::make_cert(spec, pki.leaf_key.get());
  CHECK(id::ad_dn(X509_get_subject_name(x.get())) ==
        "C=US,S=WA,O=\"Lab, Inc.\",E=a@lab.test,CN=Eve\\01");
}

TEST_CASE("read_ad_facts: SKI, thumbprint, SID extension") {
  tiered_pki pki;
  auto spec = tiered_pki::user("alice@lab.test");
  spec.raw_extensions = {
      {"2.5.29.14", tlv(0x04, std::string("\x0a\x1b\x2c\x3d", 4))},
      {"1.3.6.1.4.1.311.25.2", sid_extension("S-1-5-21-1004336348-1177238915-682003330-1104")}};
  auto leaf = pki.leaf(pki.a.get(), pki.a_key.get(), spec);
  const id::ad_facts f = id::read_ad_facts(leaf.get());
  CHECK(f.issuer_dn == "DC=test,DC=lab,CN=Issuing A");
  CHECK(f.subject_dn == "CN=alice");
  CHECK(f.ski == "0A1B2C3D");
  CHECK(f.sha1.size() == 40);
  CHECK(f.sid == "S-1-5-21-1004336348-1177238915-682003330-1104");
  CHECK(f.sid_error.empty());

  SUBCASE("no SID extension") {
    auto plain = pki.leaf(pki.a.get(), pki.a_key.get());
    const auto s = id::read_sid_extension(plain.get());
    CHECK_FALSE(s.present);
    CHECK(s.error.empty());
    CHECK(id::read_ad_facts(plain.get()).ski.empty());
  }
  SUBCASE("wrong otherName type is malformed, never a SID") {
    auto bad = tiered_pki::user("alice@lab.test");
    bad.raw_extensions = {
        {"1.3.6.1.4.1.311.25.2", sid_extension("S-1-5-21-1-2-3-500", "1.3.6.1.4.1.311.20.2.3")}};
    auto x = pki.leaf(pki.a.get(), pki.a_key.get(), bad);
    const auto s = id::read_sid_extension(x.get());
    CHECK(s.present);
    CHECK(s.sid.empty());
    CHECK_FALSE(s.error.empty());
  }
  SUBCASE("two SID extensions") {
    auto bad = tiered_pki::user("alice@lab.test");
    bad.raw_extensions = {{"1.3.6.1.4.1.311.25.2", sid_extension("S-1-5-21-1-2-3-500")},
                          {"1.3.6.1.4.1.311.25.2", sid_extension("S-1-5-21-1-2-3-501")}};
    auto x = pki.leaf(pki.a.get(), pki.a_key.get(), bad);
    CHECK(id::read_sid_extension(x.get()).error.find("twice") != std::string::npos);
  }
  SUBCASE("garbage value") {
    auto bad = tiered_pki::user("alice@lab.test");
    bad.raw_extensions = {{"1.3.6.1.4.1.311.25.2", std::string("\x30\x05\x01", 3)}};
    auto x = pki.leaf(pki.a.get(), pki.a_key.get(), bad);
    const auto s = id::read_sid_extension(x.get());
    CHECK(s.present);
    CHECK_FALSE(s.error.empty());
  }
}

TEST_CASE("templates: v2 OID and v1 name") {
  tiered_pki pki;
  const std::vector<std::string> allowed = {"1.3.6.1.4.1.311.21.8.1.2", "SmartcardLogon"};
  SUBCASE("v2 OID listed") {
    auto spec = tiered_pki::user("alice@lab.test");
    spec.raw_extensions = {{"1.3.6.1.4.1.311.21.7", template_v2("1.3.6.1.4.1.311.21.8.1.2")}};
    const auto tmpl = id::read_template(pki.leaf(pki.a.get(), pki.a_key.get(), spec).get());
    CHECK(tmpl.oid == "1.3.6.1.4.1.311.21.8.1.2");
    CHECK(id::template_allowed(tmpl, allowed));
  }
  SUBCASE("v2 OID not listed (a prefix is not a match)") {
    auto spec = tiered_pki::user("alice@lab.test");
    spec.raw_extensions = {{"1.3.6.1.4.1.311.21.7", template_v2("1.3.6.1.4.1.311.21.8.1.23")}};
    const auto tmpl = id::read_template(pki.leaf(pki.a.get(), pki.a_key.get(), spec).get());
    CHECK_FALSE(id::template_allowed(tmpl, allowed));
  }
  SUBCASE("v1 name, case-insensitive") {
    auto spec = tiered_pki::user("alice@lab.test");
    spec.raw_extensions = {{"1.3.6.1.4.1.311.20.2", bmp("smartcardlogon")}};
    const auto tmpl = id::read_template(pki.leaf(pki.a.get(), pki.a_key.get(), spec).get());
    CHECK(tmpl.name == "smartcardlogon");
    CHECK(id::template_allowed(tmpl, allowed));
    CHECK_FALSE(id::template_allowed(tmpl, std::vector<std::string>{"User"}));
  }
  SUBCASE("no template extension") {
    const auto tmpl = id::read_template(pki.leaf(pki.a.get(), pki.a_key.get()).get());
    CHECK(tmpl.oid.empty());
    CHECK(tmpl.name.empty());
    CHECK_FALSE(id::template_allowed(tmpl, allowed));
  }
  SUBCASE("malformed v2 extension never matches") {
    auto spec = tiered_pki::user("alice@lab.test");
    spec.raw_extensions = {{"1.3.6.1.4.1.311.21.7", tlv(0x30, tlv(0x02, "\x01"))}};
    const auto tmpl = id::read_template(pki.leaf(pki.a.get(), pki.a_key.get(), spec).get());
    CHECK_FALSE(tmpl.error.empty());
    CHECK_FALSE(id::template_allowed(tmpl, allowed));
  }
}

TEST_CASE("upn_suffix_allowed: exact domain, case-insensitive, no subdomains") {
  const std::vector<std::string> s = {"corp.example.com", "lab.test"};
  CHECK(id::upn_suffix_allowed("alice@corp.example.com", s));
  CHECK(id::upn_suffix_allowed("alice@LAB.Test", s));
  CHECK_FALSE(id::upn_suffix_allowed("ceo@fabrikam.com", s));
  CHECK_FALSE(id::upn_suffix_allowed("a@sub.corp.example.com", s));
  CHECK_FALSE(id::upn_suffix_allowed("a@example.com", s));
  CHECK_FALSE(id::upn_suffix_allowed("no-at-sign", s));
}

TEST_CASE("verifier: auth.issuing_cas refuses a second issuing CA under the same root (403.12)") {
  tiered_pki pki;
  verifier_options o;
  o.issuing_cas_file = (pki.dir.path() / "a.pem").string();
  auto v = pki.make(o);
  auto from_a = pki.leaf(pki.a.get(), pki.a_key.get());
  auto from_b = pki.leaf(pki.b.get(), pki.b_key.get());
  const client_identity ok = v->verify(from_a.get(), nullptr);
  CHECK_MESSAGE(ok.reason == rejection::none, ok.detail);
  CHECK(ok.ad.issuer_dn == "DC=test,DC=lab,CN=Issuing A");
  const client_identity refused = v->verify(from_b.get(), nullptr);
  CHECK(refused.reason == rejection::issuer_not_allowed);
  CHECK(id::iis_substatus(refused.reason) == 12);
  CHECK(refused.upn.empty());
  CHECK(refused.detail.find("Issuing B") != std::string::npos);

  SUBCASE("without the limit both are accepted (today's behaviour)") {
    auto open = pki.make({});
    CHECK(open->verify(from_b.get(), nullptr).reason == rejection::none);
  }
  SUBCASE("a leaf issued by the root directly is not issued by an issuing CA") {
    auto direct = pki.leaf(pki.root.get(), pki.root_key.get());
    CHECK(v->verify(direct.get(), nullptr).reason == rejection::issuer_not_allowed);
  }
  SUBCASE("the issuing CAs file alone builds the path (no client_intermediates)") {
    verifier_options only;
    only.client_ca_file = (pki.dir.path() / "root.pem").string();
    only.issuing_cas_file = (pki.dir.path() / "a.pem").string();
    auto w = verifier::make(only);
    REQUIRE(w.has_value());
    CHECK(w.value()->verify(from_a.get(), nullptr).reason == rejection::none);
  }
  SUBCASE("a leaf is not a CA for this list") {
    verifier_options bad;
    bad.client_ca_file = (pki.dir.path() / "root.pem").string();
    bad.issuing_cas_file = pki.dir.write("leaf.pem", t::pem_of(from_a.get()));
    std::string error;
    auto w = verifier::make(bad, &error);
    REQUIRE_FALSE(w.has_value());
    CHECK(w.error() == id::errc::issuing_cas_load_failed);
    CHECK(error.find("not a CA certificate") != std::string::npos);
  }
}

TEST_CASE("verifier: auth.upn_suffixes and auth.certificate_templates (403.12)") {
  tiered_pki pki;
  verifier_options o;
  o.upn_suffixes = {"lab.test"};
  auto v = pki.make(o);
  auto good = pki.leaf(pki.a.get(), pki.a_key.get());
  auto other = pki.leaf(pki.a.get(), pki.a_key.get(), tiered_pki::user("ceo@fabrikam.com"));
  CHECK(v->verify(good.get(), nullptr).reason == rejection::none);
  const auto r = v->verify(other.get(), nullptr);
  CHECK(r.reason == rejection::upn_suffix_not_allowed);
  CHECK(id::iis_substatus(r.reason) == 12);

  verifier_options ot;
  ot.certificate_templates = {"1.3.6.1.4.1.311.21.8.1.2"};
  auto vt = pki.make(ot);
  auto spec = tiered_pki::user("alice@lab.test");
  spec.raw_extensions = {{"1.3.6.1.4.1.311.21.7", template_v2("1.3.6.1.4.1.311.21.8.1.2")}};
  auto templated = pki.leaf(pki.a.get(), pki.a_key.get(), spec);
  CHECK(vt->verify(templated.get(), nullptr).reason == rejection::none);
  const auto no_tmpl = vt->verify(good.get(), nullptr);
  CHECK(no_tmpl.reason == rejection::template_not_allowed);
  CHECK(no_tmpl.detail.find("no certificate template") != std::string::npos);
}

TEST_CASE("verifier: a client_ca without any self-signed certificate is refused at load") {
  tiered_pki pki;
  verifier_options o;
  o.client_ca_file = (pki.dir.path() / "a.pem").string();
  std::string error;
  auto v = verifier::make(o, &error);
  REQUIRE_FALSE(v.has_value());
  CHECK(v.error() == id::errc::ca_load_failed);
  CHECK(error.find("self-signed") != std::string::npos);
  CHECK(error.find("auth.issuing_cas") != std::string::npos);
}

TEST_CASE("audit_trust: says which list an issuing CA belongs in") {
  tiered_pki pki;
  const std::string root = (pki.dir.path() / "root.pem").string();
  const std::string a = (pki.dir.path() / "a.pem").string();
  const std::string mixed = pki.dir.write("mixed.pem", t::pem_of(pki.root.get()) + t::pem_of(pki.a.get()));

  SUBCASE("issuing CA alone as client_ca: fatal, names the lists") {
    const auto f = id::audit_trust(a, "", "");
    REQUIRE(f.size() == 2);
    CHECK_FALSE(f[0].fatal);
    CHECK(f[0].message.find("Issuing A") != std::string::npos);
    CHECK(f[0].message.find("tls.client_intermediates") != std::string::npos);
    CHECK(f[0].message.find("auth.issuing_cas") != std::string::npos);
    CHECK(f[1].fatal);
  }
  SUBCASE("root and issuing CA together: a warning only") {
    const auto f = id::audit_trust(mixed, "", "");
    REQUIRE(f.size() == 1);
    CHECK_FALSE(f[0].fatal);
  }
  SUBCASE("the recommended layout: nothing to say") {
    CHECK(id::audit_trust(root, a, a).empty());
  }
  SUBCASE("an issuing CA under another root") {
    tiered_pki other;
    const std::string foreign = pki.dir.write("foreign.pem", t::pem_of(other.a.get()));
    const auto f = id::audit_trust(root, "", foreign);
    REQUIRE(f.size() == 1);
    CHECK(f[0].message.find("does not chain") != std::string::npos);
  }
}

TEST_CASE("issuer_id_of_der: NTAuth values") {
  tiered_pki pki;
  const auto der = t::der_of(pki.a.get());
  const auto got = id::issuer_id_of_der(der);
  REQUIRE(got.has_value());
  CHECK(*got == id::issuer_id_of(pki.a.get()));
  const std::vector<unsigned char> junk = {0x30, 0x03, 0x01, 0x01, 0x00};
  CHECK_FALSE(id::issuer_id_of_der(junk).has_value());
}

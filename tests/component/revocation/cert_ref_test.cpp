#include "identity/cert_ref.hpp"

#include <cstdlib>

#include <doctest/doctest.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "support.hpp"

using namespace test;

namespace {

std::string hex_of(const unsigned char* p, std::size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(digits[p[i] >> 4]);
    out.push_back(digits[p[i] & 15]);
  }
  return out;
}

std::string hex_of(const std::string& s) {
  return hex_of(reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

// A leaf issued by the lab issuing CA with the given extensions (openssl.cnf syntax).
ossl::x509_ptr make_leaf(const std::vector<std::pair<int, std::string>>& exts, long serial) {
  ossl::x509_ptr ca = read_cert(pki("ca/issuing.pem"));
  ossl::evp_pkey_ptr ca_key = read_key(pki("ca/issuing.key"));
  ossl::evp_pkey_ptr key{EVP_EC_gen("P-256")};
  ossl::x509_ptr x{X509_new()};
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), serial);
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("cdp test"), -1, -1, 0);
  X509_set_issuer_name(x.get(), X509_get_subject_name(ca.get()));
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 3600);
  X509_set_pubkey(x.get(), key.get());
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca.get(), x.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : exts) {
    X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    REQUIRE(e != nullptr);
    X509_add_ext(x.get(), e, -1);
    X509_EXTENSION_free(e);
  }
  REQUIRE(X509_sign(x.get(), ca_key.get(), EVP_sha256()) > 0);
  return x;
}

}  // namespace

TEST_CASE("revocation: issuer_id and serial equal the CertID of openssl ocsp -reqout") {
  temp_dir dir;
  const std::string req_path = dir.file("req.der");
  const std::string cmd = "openssl ocsp -issuer '" + pki("ca/issuing.pem") + "' -cert '" +
                          pki("clients/alice.pem") + "' -no_nonce -reqout '" + req_path +
                          "' >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const std::string der = read_file(req_path);
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  std::unique_ptr<OCSP_REQUEST, ossl::deleter<OCSP_REQUEST_free>> req{
      d2i_OCSP_REQUEST(nullptr, &p, static_cast<long>(der.size()))};
  REQUIRE(req);
  OCSP_CERTID* cid = OCSP_onereq_get0_id(OCSP_request_onereq_get0(req.get(), 0));
  ASN1_OCTET_STRING* name_hash = nullptr;
  ASN1_OCTET_STRING* key_hash = nullptr;
  ASN1_INTEGER* serial = nullptr;
  REQUIRE(OCSP_id_get0_info(&name_hash, nullptr, &key_hash, &serial, cid) == 1);

  const id::chain_refs refs = lab_refs("alice");
  REQUIRE(refs.size() == 2);
  const id::issuer_id issuing = id::issuer_id_of(read_cert(pki("ca/issuing.pem")).get());
  CHECK(refs[0].issuer == issuing);
  CHECK(hex_of(refs[0].issuer.name_hash.data(), 20) ==
        hex_of(name_hash->data, static_cast<std::size_t>(name_hash->length)));
  CHECK(hex_of(refs[0].issuer.key_hash.data(), 20) ==
        hex_of(key_hash->data, static_cast<std::size_t>(key_hash->length)));
  CHECK(refs[0].serial == id::serial_octets(serial));
  // Independently: the magnitude OpenSSL keeps, with a sign octet only when the high bit is set.
  const ossl::x509_ptr alice = read_cert(pki("clients/alice.pem"));
  const ASN1_INTEGER* sn = X509_get0_serialNumber(alice.get());
  std::string magnitude = hex_of(sn->data, static_cast<std::size_t>(sn->length));
  if (sn->data[0] & 0x80) magnitude.insert(0, "00");
  CHECK(hex_of(refs[0].serial) == magnitude);
  // The second ref is the issuing CA, issued by the root.
  CHECK(refs[1].issuer == id::issuer_id_of(read_cert(pki("ca/root.pem")).get()));
  CHECK(refs[0].cdp_urls.empty());
  CHECK(refs[0].ocsp_urls.empty());
}

TEST_CASE("revocation: serial_octets keeps the sign octet of a high-bit serial") {
  std::unique_ptr<ASN1_INTEGER, ossl::deleter<ASN1_INTEGER_free>> i{ASN1_INTEGER_new()};
  ASN1_INTEGER_set(i.get(), 0x80);
  CHECK(hex_of(id::serial_octets(i.get())) == "0080");
  ASN1_INTEGER_set(i.get(), 0x7f);
  CHECK(hex_of(id::serial_octets(i.get())) == "7f");
}

TEST_CASE("revocation: refs_of_chain keeps http CDP and AIA OCSP URIs only") {
  ossl::x509_ptr leaf = make_leaf(
      {{NID_crl_distribution_points, "URI:ldap://dir.example/cn=crl,URI:http://cdp.example/a.crl,"
                                     "URI:HTTP://cdp2.example/b.crl"},
       {NID_info_access, "OCSP;URI:http://ocsp.example/,caIssuers;URI:http://ca.example/ca.crt,"
                         "OCSP;URI:https://ocsp.example/"}},
      0x1234);
  ossl::x509_stack_ptr chain{sk_X509_new_null()};
  sk_X509_push(chain.get(), leaf.release());
  sk_X509_push(chain.get(), read_cert(pki("ca/issuing.pem")).release());
  sk_X509_push(chain.get(), read_cert(pki("ca/root.pem")).release());
  const id::chain_refs refs = id::refs_of_chain(chain.get());
  REQUIRE(refs.size() == 2);
  CHECK(refs[0].cdp_urls ==
        std::vector<std::string>{"http://cdp.example/a.crl", "HTTP://cdp2.example/b.crl"});
  CHECK(refs[0].ocsp_urls == std::vector<std::string>{"http://ocsp.example/"});
  CHECK(hex_of(refs[0].serial) == "1234");
  CHECK(id::refs_of_chain(nullptr).empty());
}

TEST_CASE("revocation: issuer_registry is bounded and finds by id and by name") {
  id::issuer_registry reg(1);
  ossl::x509_ptr root = read_cert(pki("ca/root.pem"));
  ossl::x509_ptr issuing = read_cert(pki("ca/issuing.pem"));
  reg.add(root.get());
  reg.add(issuing.get());  // refused: full
  reg.add(root.get());     // already there
  CHECK(reg.size() == 1);
  CHECK(reg.find(id::issuer_id_of(root.get())) != nullptr);
  CHECK(reg.find(id::issuer_id_of(issuing.get())) == nullptr);
  CHECK(reg.find_by_name(X509_get_subject_name(root.get())).size() == 1);
  CHECK(reg.find_by_name(X509_get_subject_name(issuing.get())).empty());
}

#include "test_certs.hpp"

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <stdexcept>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

namespace cbagate::identity::test {
namespace {

using asn1_time_ptr = std::unique_ptr<ASN1_TIME, ossl::deleter<ASN1_TIME_free>>;
using extension_ptr = std::unique_ptr<X509_EXTENSION, ossl::deleter<X509_EXTENSION_free>>;

void require(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("test_certs: ") + what + " failed");
}

void add_conf_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  extension_ptr ext{X509V3_EXT_conf_nid(nullptr, &ctx, nid, value)};
  require(ext != nullptr, value);
  require(X509_add_ext(cert, ext.get(), -1) == 1, "X509_add_ext");
}

void add_san(X509* cert, const cert_spec& spec) {
  ossl::general_names_ptr names{GENERAL_NAMES_new()};
  require(names != nullptr, "GENERAL_NAMES_new");
  for (const upn_value& u : spec.upns) {
    GENERAL_NAME* gn = GENERAL_NAME_new();
    ASN1_TYPE* value = ASN1_TYPE_new();
    ASN1_STRING* s = ASN1_STRING_type_new(u.type);
    require(gn && value && s, "otherName alloc");
    require(ASN1_STRING_set(s, u.bytes.data(), static_cast<int>(u.bytes.size())) == 1, "set");
    ASN1_TYPE_set(value, u.type, s);
    require(GENERAL_NAME_set0_othername(gn, OBJ_txt2obj("1.3.6.1.4.1.311.20.2.3", 1), value) == 1,
            "GENERAL_NAME_set0_othername");
    sk_GENERAL_NAME_push(names.get(), gn);
  }
  for (const std::string& e : spec.emails) {
    GENERAL_NAME* gn = GENERAL_NAME_new();
    ASN1_IA5STRING* s = ASN1_IA5STRING_new();
    require(gn && s, "rfc822 alloc");
    ASN1_STRING_set(s, e.data(), static_cast<int>(e.size()));
    GENERAL_NAME_set0_value(gn, GEN_EMAIL, s);
    sk_GENERAL_NAME_push(names.get(), gn);
  }
  for (int i = 0; i < spec.san_extensions; ++i)
    require(X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_APPEND) == 1,
            "X509_add1_ext_i2d");
}

}  // namespace

std::int64_t now() { return static_cast<std::int64_t>(std::time(nullptr)); }

ossl::evp_pkey_ptr make_key() {
  ossl::evp_pkey_ptr key{EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")};
  require(key != nullptr, "EVP_PKEY_Q_keygen");
  return key;
}

ossl::x509_ptr make_cert(const cert_spec& spec, EVP_PKEY* key, X509* issuer,
                         EVP_PKEY* issuer_key) {
  ossl::x509_ptr cert{X509_new()};
  require(cert != nullptr, "X509_new");
  X509* x = cert.get();
  require(X509_set_version(x, X509_VERSION_3) == 1, "version");
  require(ASN1_INTEGER_set(X509_get_serialNumber(x), spec.serial) == 1, "serial");
  const std::int64_t t = now();
  require(ASN1_TIME_set(X509_getm_notBefore(x),
                        static_cast<std::time_t>(spec.not_before ? spec.not_before : t - 3600)),
          "notBefore");
  require(ASN1_TIME_set(X509_getm_notAfter(x),
                        static_cast<std::time_t>(spec.not_after ? spec.not_after : t + 30 * 86400)),
          "notAfter");
  X509_NAME* name = X509_get_subject_name(x);
  for (const name_entry& e : spec.subject)
    require(X509_NAME_add_entry_by_NID(name, e.nid, e.type,
                                       reinterpret_cast<const unsigned char*>(e.bytes.data()),
                                       static_cast<int>(e.bytes.size()), -1, 0) == 1,
            "subject entry");
  require(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) == 1, "issuer");
  require(X509_set_pubkey(x, key) == 1, "pubkey");
  X509* signer = issuer ? issuer : x;
  if (spec.ca) {
    add_conf_ext(x, signer, NID_basic_constraints, "critical,CA:TRUE");
    add_conf_ext(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_conf_ext(x, signer, NID_basic_constraints, "critical,CA:FALSE");
    add_conf_ext(x, signer, NID_key_usage, "critical,digitalSignature");
  }
  if (!spec.eku.empty()) add_conf_ext(x, signer, NID_ext_key_usage, spec.eku.c_str());
  if (!spec.upns.empty() || !spec.emails.empty()) add_san(x, spec);
  for (const auto& [oid, der] : spec.raw_extensions) {
    std::unique_ptr<ASN1_OBJECT, ossl::deleter<ASN1_OBJECT_free>> obj{OBJ_txt2obj(oid.c_str(), 1)};
    std::unique_ptr<ASN1_OCTET_STRING, ossl::deleter<ASN1_OCTET_STRING_free>> os{
        ASN1_OCTET_STRING_new()};
    require(obj && os, "raw extension alloc");
    require(ASN1_OCTET_STRING_set(os.get(), reinterpret_cast<const unsigned char*>(der.data()),
                                  static_cast<int>(der.size())) == 1,
            "raw extension value");
    extension_ptr ext{X509_EXTENSION_create_by_OBJ(nullptr, obj.get(), 0, os.get())};
    require(ext != nullptr, "X509_EXTENSION_create_by_OBJ");
    require(X509_add_ext(x, ext.get(), -1) == 1, "X509_add_ext raw");
  }
  require(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0, "X509_sign");
  return cert;
}

ossl::x509_crl_ptr make_crl(X509* issuer, EVP_PKEY* issuer_key, const std::vector<X509*>& revoked,
                            std::int64_t this_update, std::int64_t next_update) {
  ossl::x509_crl_ptr crl{X509_CRL_new()};
  require(crl != nullptr, "X509_CRL_new");
  require(X509_CRL_set_version(crl.get(), 1) == 1, "crl version");
  require(X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(issuer)) == 1, "crl issuer");
  asn1_time_ptr last{ASN1_TIME_new()}, next{ASN1_TIME_new()};
  require(last && next, "ASN1_TIME_new");
  ASN1_TIME_set(last.get(), static_cast<std::time_t>(this_update));
  ASN1_TIME_set(next.get(), static_cast<std::time_t>(next_update));
  require(X509_CRL_set1_lastUpdate(crl.get(), last.get()) == 1, "lastUpdate");
  require(X509_CRL_set1_nextUpdate(crl.get(), next.get()) == 1, "nextUpdate");
  for (X509* cert : revoked) {
    X509_REVOKED* r = X509_REVOKED_new();
    require(r != nullptr, "X509_REVOKED_new");
    X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(cert));
    X509_REVOKED_set_revocationDate(r, last.get());
    require(X509_CRL_add0_revoked(crl.get(), r) == 1, "add0_revoked");
  }
  X509_CRL_sort(crl.get());
  require(X509_CRL_sign(crl.get(), issuer_key, EVP_sha256()) > 0, "X509_CRL_sign");
  return crl;
}

std::vector<unsigned char> der_of(X509* cert) {
  const int len = i2d_X509(cert, nullptr);
  require(len > 0, "i2d_X509");
  std::vector<unsigned char> out(static_cast<std::size_t>(len));
  unsigned char* p = out.data();
  i2d_X509(cert, &p);
  return out;
}

namespace {
std::string bio_string(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_ctrl(bio, BIO_CTRL_INFO, 0, static_cast<void*>(&data));
  return len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string();
}
}  // namespace

std::string pem_of(X509* cert) {
  ossl::bio_ptr bio{BIO_new(BIO_s_mem())};
  require(bio && PEM_write_bio_X509(bio.get(), cert) == 1, "PEM_write_bio_X509");
  return bio_string(bio.get());
}

std::string pem_of(X509_CRL* crl) {
  ossl::bio_ptr bio{BIO_new(BIO_s_mem())};
  require(bio && PEM_write_bio_X509_CRL(bio.get(), crl) == 1, "PEM_write_bio_X509_CRL");
  return bio_string(bio.get());
}

temp_dir::temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "cbagate-identity-XXXXXX").string();
  require(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string temp_dir::write(const std::string& name, const std::string& content) const {
  const std::filesystem::path p = path_ / name;
  std::ofstream out(p, std::ios::binary);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  require(out.good(), "write");
  return p.string();
}

}  // namespace cbagate::identity::test

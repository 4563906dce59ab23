#pragma once
// In-process certificates for the identity tests: EC keys that never leave memory, certificates
// and CRLs built with the OpenSSL API. Only public material is ever written (to a temp dir).
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <openssl/x509.h>

#include "common/openssl_ptr.hpp"

namespace cbagate::identity::test {

/** A fresh ECDSA P-256 key. */
ossl::evp_pkey_ptr make_key();

/** One RDN of a subject: NID, ASN.1 string type (V_ASN1_UTF8STRING, ...) and raw bytes. */
struct name_entry {
  int nid;
  int type;
  std::string bytes;
};

/** A SAN otherName UPN with its ASN.1 value type and raw value bytes. */
struct upn_value {
  int type;
  std::string bytes;
};

struct cert_spec {
  std::vector<name_entry> subject{{NID_commonName, V_ASN1_UTF8STRING, "test"}};
  std::vector<upn_value> upns;       ///< SAN otherNames 1.3.6.1.4.1.311.20.2.3
  std::vector<std::string> emails;   ///< SAN rfc822Names
  int san_extensions = 1;            ///< 2 = the SAN extension twice (RFC 5280 violation)
  bool ca = false;                   ///< basicConstraints CA:TRUE + keyCertSign, cRLSign
  std::string eku = "clientAuth";    ///< extendedKeyUsage value; "" = no extension
  std::int64_t not_before = 0;       ///< unix seconds; 0 = now - 1 hour
  std::int64_t not_after = 0;        ///< unix seconds; 0 = now + 30 days
  long serial = 1;
  /// Extra extensions: dotted OID and the DER of the extension value (non-critical).
  std::vector<std::pair<std::string, std::string>> raw_extensions;
};

/** Builds and signs a certificate; self-signed when `issuer` is null. */
ossl::x509_ptr make_cert(const cert_spec& spec, EVP_PKEY* key, X509* issuer = nullptr,
                         EVP_PKEY* issuer_key = nullptr);

/** A CRL of `issuer` listing `revoked`, valid from `this_update` to `next_update`. */
ossl::x509_crl_ptr make_crl(X509* issuer, EVP_PKEY* issuer_key, const std::vector<X509*>& revoked,
                            std::int64_t this_update, std::int64_t next_update);

std::vector<unsigned char> der_of(X509* cert);
std::string pem_of(X509* cert);
std::string pem_of(X509_CRL* crl);
std::int64_t now();

/** A private temp directory, removed with its content on destruction. */
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  /** Writes `content` to `name` in the directory; returns the absolute path. */
  std::string write(const std::string& name, const std::string& content) const;
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace cbagate::identity::test

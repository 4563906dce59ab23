#pragma once
// A throw-away CA for the revocation fuzz targets, made in memory at first use (a P-256 key and
// a self-signed certificate, "CN=cbagate Fuzz CA"): no key is ever stored. The targets re-sign
// what the fuzzer wrote with it, so that the code behind the signature check is reached too.
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdlib>

namespace fuzz {

struct test_ca {
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
};

inline const test_ca& ca() {
  static const test_ca made = [] {
    test_ca c;
    c.key = EVP_EC_gen("P-256");
    c.cert = X509_new();
    if (!c.key || !c.cert) std::abort();
    X509_set_version(c.cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c.cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(c.cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(c.cert), 3600L * 24 * 365);
    X509_NAME* name = X509_get_subject_name(c.cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("cbagate Fuzz CA"), -1, -1, 0);
    X509_set_issuer_name(c.cert, name);
    X509_set_pubkey(c.cert, c.key);
    if (X509_sign(c.cert, c.key, EVP_sha256()) <= 0) std::abort();
    return c;
  }();
  return made;
}

}  // namespace fuzz

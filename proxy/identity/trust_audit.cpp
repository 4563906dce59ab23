#include "identity/trust_audit.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/openssl_ptr.hpp"

namespace cbagate::identity {
namespace {

// Every certificate of a PEM file or the one of a DER file; empty when unreadable.
ossl::x509_stack_ptr read_all(const std::string& path) {
  ossl::x509_stack_ptr out{sk_X509_new_null()};
  if (!out || path.empty()) return out;
  ossl::bio_ptr bio{BIO_new_file(path.c_str(), "rb")};
  if (!bio) return out;
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
    if (sk_X509_push(out.get(), x) <= 0) X509_free(x);
  if (sk_X509_num(out.get()) == 0 && BIO_seek(bio.get(), 0) == 0)
    if (X509* x = d2i_X509_bio(bio.get(), nullptr))
      if (sk_X509_push(out.get(), x) <= 0) X509_free(x);
  return out;
}

std::string subject_of(X509* x) {
  ossl::bio_ptr bio{BIO_new(BIO_s_mem())};
  if (!bio || X509_NAME_print_ex(bio.get(), X509_get_subject_name(x), 0, XN_FLAG_RFC2253) < 0)
    return "?";
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  std::string s = len > 0 && data ? std::string(data, static_cast<std::size_t>(len)) : "?";
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F) c = '?';
  return s;
}

// Whether `x` chains up to one of `roots` through `intermediates` (signatures only; no time,
// purpose or revocation: this is about where a certificate belongs, not whether it is valid).
bool anchored(X509* x, STACK_OF(X509) * roots, STACK_OF(X509) * intermediates, int depth = 0) {
  if (depth > 8) return false;
  for (STACK_OF(X509)* set : {roots, intermediates}) {
    for (int i = 0; i < sk_X509_num(set); ++i) {
      X509* up = sk_X509_value(set, i);
      if (up == x || X509_check_issued(up, x) != X509_V_OK) continue;
      EVP_PKEY* key = X509_get0_pubkey(up);
      if (key == nullptr || X509_verify(x, key) != 1) continue;
      if (set == roots) return true;
      if (anchored(up, roots, intermediates, depth + 1)) return true;
    }
  }
  return false;
}

}  // namespace

std::vector<trust_finding> audit_trust(const std::string& client_ca_file,
                                       const std::string& intermediates_file,
                                       const std::string& issuing_cas_file) {
  std::vector<trust_finding> out;
  ERR_set_mark();
  ossl::x509_stack_ptr cas = read_all(client_ca_file);
  ossl::x509_stack_ptr inter = read_all(intermediates_file);
  ossl::x509_stack_ptr issuing = read_all(issuing_cas_file);
  if (!cas || !inter || !issuing) {
    ERR_pop_to_mark();
    return out;
  }
  ossl::x509_stack_ptr roots{sk_X509_new_null()};
  int self_signed = 0;
  for (int i = 0; i < sk_X509_num(cas.get()); ++i) {
    X509* x = sk_X509_value(cas.get(), i);
    if (X509_self_signed(x, 1) == 1) {
      ++self_signed;
      X509_up_ref(x);
      if (sk_X509_push(roots.get(), x) <= 0) X509_free(x);
      continue;
    }
    out.push_back({false, "tls.client_ca: certificate " + std::to_string(i + 1) + " [" +
                              subject_of(x) +
                              "] is not self-signed, so it can never be a trust anchor (a chain "
                              "must end at a self-signed root). Put its root in tls.client_ca, "
                              "this certificate in tls.client_intermediates, and, if it issues "
                              "the users' logon certificates, in auth.issuing_cas (AD's NTAuth "
                              "store holds issuing CAs; cbagate's anchors are roots)"});
  }
  if (sk_X509_num(cas.get()) > 0 && self_signed == 0)
    out.push_back({true, "tls.client_ca: no certificate in it is self-signed, so no client "
                         "certificate can ever be accepted (every request on a certificate "
                         "route would get 403.16)"});
  for (int i = 0; i < sk_X509_num(issuing.get()); ++i) {
    X509* x = sk_X509_value(issuing.get(), i);
    if (X509_self_signed(x, 1) == 1) {
      out.push_back({false, "auth.issuing_cas: certificate " + std::to_string(i + 1) + " [" +
                                subject_of(x) +
                                "] is a self-signed root: only certificates it issues directly "
                                "are accepted; an issuing CA below it is usually meant"});
    } else if (!anchored(x, roots.get(), inter.get())) {
      out.push_back({false, "auth.issuing_cas: certificate " + std::to_string(i + 1) + " [" +
                                subject_of(x) +
                                "] does not chain to any root of tls.client_ca: no certificate "
                                "it issues can be accepted"});
    }
  }
  ERR_pop_to_mark();
  return out;
}

}  // namespace cbagate::identity

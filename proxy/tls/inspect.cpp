#include "tls/inspect.hpp"

#include <cstdio>
#include <ctime>
#include <fstream>
#include <string_view>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>

#include "common/openssl_error.hpp"

namespace cbagate::tls {
namespace {

// Larger than any certificate, key or CRL bundle a deployment uses (a 100,000-entry CRL is about
// 4 MiB); a bigger file is not read into memory.
constexpr std::size_t max_file_bytes = 64u << 20;

bool read_file(const std::string& path, std::string& out, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot open: " + std::system_category().message(errno);
    return false;
  }
  in.seekg(0, std::ios::end);
  const auto size = in.tellg();
  if (size < 0 || static_cast<std::size_t>(size) > max_file_bytes) {
    error = path + ": cannot read (larger than 64 MiB?)";
    return false;
  }
  in.seekg(0, std::ios::beg);
  out.resize(static_cast<std::size_t>(size));
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  if (!in) {
    error = path + ": cannot read: " + std::system_category().message(errno);
    return false;
  }
  if (out.empty()) {
    error = path + ": the file is empty";
    return false;
  }
  return true;
}

bool is_pem(std::string_view data) { return data.find("-----BEGIN ") != std::string_view::npos; }

bool has_pem_label(std::string_view data, std::string_view label) {
  const std::string marker = "-----BEGIN " + std::string(label) + "-----";
  return data.find(marker) != std::string_view::npos;
}

bool pem_has_key(std::string_view data) {
  return has_pem_label(data, "PRIVATE KEY") || has_pem_label(data, "RSA PRIVATE KEY") ||
         has_pem_label(data, "EC PRIVATE KEY") || has_pem_label(data, "ENCRYPTED PRIVATE KEY");
}

bool pem_has_certificate(std::string_view data) {
  return has_pem_label(data, "CERTIFICATE") || has_pem_label(data, "TRUSTED CERTIFICATE");
}

// A DER PKCS#12 (PFX) bundle: what Windows exports with "include the private key".
bool is_pkcs12(std::string_view data) {
  if (is_pem(data)) return has_pem_label(data, "PKCS12");
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  PKCS12* p12 = d2i_PKCS12(nullptr, &p, static_cast<long>(data.size()));
  ERR_clear_error();
  if (p12 == nullptr) return false;
  PKCS12_free(p12);
  return true;
}

std::string pkcs12_hint(const std::string& path) {
  return path +
         ": is a PKCS#12 (.pfx/.p12) bundle, which cbagate does not read; convert it to PEM: "
         "openssl pkcs12 -in " + path + " -nokeys -out server-chain.pem (certificate and chain) and "
         "openssl pkcs12 -in " + path + " -nocerts -nodes -out server.key (key, unencrypted)";
}

bool der_is_certificate(std::string_view data) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  X509* x = d2i_X509(nullptr, &p, static_cast<long>(data.size()));
  ERR_clear_error();
  if (x == nullptr) return false;
  X509_free(x);
  return true;
}

bool der_is_key(std::string_view data) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  EVP_PKEY* k = d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(data.size()));
  ERR_clear_error();
  if (k == nullptr) return false;
  EVP_PKEY_free(k);
  return true;
}

bool der_is_encrypted_key(std::string_view data) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  X509_SIG* s = d2i_X509_SIG(nullptr, &p, static_cast<long>(data.size()));
  ERR_clear_error();
  if (s == nullptr) return false;
  X509_SIG_free(s);
  return true;
}

ossl::bio_ptr mem_bio(std::string_view data) {
  return ossl::bio_ptr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

// The passphrase callback of a PEM read: never prompts (OpenSSL's default reads the terminal).
int no_passphrase(char*, int, int, void* asked) {
  *static_cast<bool*>(asked) = true;
  return -1;
}

std::string name_of(const X509_NAME* name) {
  ossl::bio_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return {};
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string();
}

bool self_signed(X509* x) { return X509_check_issued(x, x) == X509_V_OK; }

void check_lifetime(const std::string& key, const std::string& path, X509* x, std::int64_t now,
                    inspection& out) {
  const std::int64_t not_after = unix_time(X509_get0_notAfter(x));
  const std::string subject = name_of(X509_get_subject_name(x));
  if (not_after <= now)
    out.warnings.push_back(key + ": " + path + ": certificate " + subject + " has EXPIRED (" +
                           relative(not_after, now) + ")");
  else if (not_after - now <= certificate_warning_seconds)
    out.warnings.push_back(key + ": " + path + ": certificate " + subject + " expires " +
                           relative(not_after, now));
}

void inspect_certificates(const std::string& key, const std::string& kind, const std::string& path,
                          std::int64_t now, inspection& out) {
  std::string error;
  auto certs = load_certificates(path, error);
  if (certs.empty()) {
    out.errors.push_back(key + ": " + error);
    return;
  }
  for (auto& c : certs) {
    check_lifetime(key, path, c.get(), now, out);
    out.certificates.push_back({kind, name_of(X509_get_subject_name(c.get())), path,
                                unix_time(X509_get0_notAfter(c.get())),
                                name_of(X509_get_issuer_name(c.get()))});
  }
}

// A server certificate with its key: both parse, they match, the chain is there, it is current.
void inspect_server(const std::string& where, const std::string& kind, const std::string& cert_path,
                    const std::string& key_path, std::int64_t now, inspection& out) {
  std::string error;
  auto certs = load_certificates(cert_path, error);
  if (certs.empty()) out.errors.push_back(where + "certificate: " + error);
  auto key = load_private_key(key_path, error);
  if (!key) out.errors.push_back(where + "private_key: " + error);
  if (certs.empty()) return;
  X509* leaf = certs.front().get();
  if (key && X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    out.errors.push_back(where + "private_key: " + key_path +
                         ": does not match the certificate in " + cert_path +
                         " (a key and certificate of different requests, or the two keys swapped?)");
  }
  if (certs.size() == 1 && !self_signed(leaf))
    out.warnings.push_back(where + "certificate: " + cert_path +
                           ": holds the server certificate without its chain; clients that do not "
                           "have the issuing CA (phones) will fail: append the intermediate CA "
                           "certificate(s) after the server certificate");
  check_lifetime(where + "certificate", cert_path, leaf, now, out);
  out.certificates.push_back({kind, name_of(X509_get_subject_name(leaf)), cert_path,
                              unix_time(X509_get0_notAfter(leaf)), name_of(X509_get_issuer_name(leaf))});
}

}  // namespace

std::int64_t unix_time(const ASN1_TIME* t) noexcept {
  if (t == nullptr) return 0;
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<std::int64_t>(timegm(&tm));
}

std::string relative(std::int64_t when, std::int64_t now) {
  const std::int64_t d = when >= now ? when - now : now - when;
  std::string span;
  if (d >= 2 * 86400)
    span = std::to_string(d / 86400) + " days";
  else if (d >= 2 * 3600)
    span = std::to_string(d / 3600) + " hours";
  else
    span = std::to_string(d / 60) + " minutes";
  return when >= now ? "in " + span : span + " ago";
}

std::vector<ossl::x509_ptr> load_certificates(const std::string& path, std::string& error) {
  std::vector<ossl::x509_ptr> out;
  std::string data;
  if (!read_file(path, data, error)) return out;
  ERR_clear_error();
  if (is_pkcs12(data)) {
    error = pkcs12_hint(path);
    return out;
  }
  if (is_pem(data)) {
    if (!pem_has_certificate(data)) {
      error = path + (pem_has_key(data) ? ": holds a private key, not a certificate"
                                        : ": holds no PEM certificate (no BEGIN CERTIFICATE line)");
      return out;
    }
    auto bio = mem_bio(data);
    while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(x);
    const unsigned long e = ERR_peek_last_error();
    if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
      error = path + ": malformed PEM certificate after " + std::to_string(out.size()) +
              " good one(s): " + ossl::error_reason();
      out.clear();
      return out;
    }
    ERR_clear_error();
    if (out.empty()) error = path + ": no certificate could be read";
    return out;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  if (X509* x = d2i_X509(nullptr, &p, static_cast<long>(data.size()))) {
    out.emplace_back(x);
    return out;
  }
  ERR_clear_error();
  if (der_is_key(data) || der_is_encrypted_key(data))
    error = path + ": holds a private key (DER), not a certificate";
  else
    error = path + ": neither a PEM nor a DER certificate";
  return out;
}

ossl::evp_pkey_ptr load_private_key(const std::string& path, std::string& error) {
  std::string data;
  if (!read_file(path, data, error)) return nullptr;
  ERR_clear_error();
  if (is_pkcs12(data)) {
    error = pkcs12_hint(path);
    return nullptr;
  }
  const std::string decrypt_hint =
      ": is encrypted (it would need a passphrase at every start); store it unencrypted with "
      "tight permissions: openssl pkey -in " + path + " -out server.key (then chmod 600)";
  if (is_pem(data)) {
    if (!pem_has_key(data)) {
      error = path + (pem_has_certificate(data) ? ": holds a certificate, not a private key "
                                                  "(tls.certificate and tls.private_key swapped?)"
                                                : ": holds no PEM private key");
      return nullptr;
    }
    if (has_pem_label(data, "ENCRYPTED PRIVATE KEY") ||
        data.find("Proc-Type: 4,ENCRYPTED") != std::string::npos) {
      error = path + decrypt_hint;
      return nullptr;
    }
    auto bio = mem_bio(data);
    bool asked = false;
    ossl::evp_pkey_ptr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, &no_passphrase, &asked));
    if (asked) {
      error = path + decrypt_hint;
      ERR_clear_error();
      return nullptr;
    }
    if (!key) error = path + ": malformed PEM private key: " + ossl::error_reason();
    return key;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  if (EVP_PKEY* k = d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(data.size())))
    return ossl::evp_pkey_ptr(k);
  ERR_clear_error();
  if (der_is_encrypted_key(data))
    error = path + decrypt_hint;
  else if (der_is_certificate(data))
    error = path + ": holds a certificate (DER), not a private key";
  else
    error = path + ": neither a PEM nor a DER private key";
  return nullptr;
}

std::vector<ossl::x509_crl_ptr> load_crls(const std::string& path, std::string& error) {
  std::vector<ossl::x509_crl_ptr> out;
  std::string data;
  if (!read_file(path, data, error)) return out;
  ERR_clear_error();
  if (is_pem(data)) {
    if (!has_pem_label(data, "X509 CRL")) {
      error = path + (pem_has_certificate(data) ? ": holds a certificate, not a CRL"
                      : pem_has_key(data)       ? ": holds a private key, not a CRL"
                                                : ": holds no PEM CRL (no BEGIN X509 CRL line)");
      return out;
    }
    auto bio = mem_bio(data);
    while (X509_CRL* c = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(c);
    const unsigned long e = ERR_peek_last_error();
    if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
      error = path + ": malformed PEM CRL after " + std::to_string(out.size()) +
              " good one(s): " + ossl::error_reason();
      out.clear();
      return out;
    }
    ERR_clear_error();
    if (out.empty()) error = path + ": no CRL could be read";
    return out;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  if (X509_CRL* c = d2i_X509_CRL(nullptr, &p, static_cast<long>(data.size()))) {
    out.emplace_back(c);
    return out;
  }
  ERR_clear_error();
  error = path + (der_is_certificate(data) ? ": holds a certificate (DER), not a CRL"
                                           : ": neither a PEM nor a DER CRL");
  return out;
}

inspection inspect(const config::snapshot& cfg, std::int64_t now) {
  inspection out;
  inspect_server("tls.", "server", cfg.tls.certificate, cfg.tls.private_key, now, out);
  for (std::size_t i = 0; i < cfg.tls.sni.size(); ++i)
    inspect_server("tls.sni[" + std::to_string(i) + "].", "sni", cfg.tls.sni[i].certificate,
                   cfg.tls.sni[i].private_key, now, out);
  inspect_certificates("tls.client_ca", "client_ca", cfg.tls.client_ca, now, out);
  if (!cfg.tls.client_intermediates.empty())
    inspect_certificates("tls.client_intermediates", "client_intermediate",
                         cfg.tls.client_intermediates, now, out);
  if (!cfg.upstream.ca.empty())
    inspect_certificates("upstream.ca", "upstream_ca", cfg.upstream.ca, now, out);
  for (std::size_t i = 0; i < cfg.tls.crl.size(); ++i) {
    const std::string key = "tls.crl[" + std::to_string(i) + "]";
    const std::string& path = cfg.tls.crl[i];
    std::string error;
    auto crls = load_crls(path, error);
    if (crls.empty()) {
      out.errors.push_back(key + ": " + error);
      continue;
    }
    for (auto& c : crls) {
      const std::string issuer = name_of(X509_CRL_get_issuer(c.get()));
      const std::int64_t next = unix_time(X509_CRL_get0_nextUpdate(c.get()));
      out.crls.push_back({issuer, path, next});
      if (next == 0) continue;
      if (next <= now)
        out.warnings.push_back(key + ": " + path + ": CRL of " + issuer +
                               " is STALE: its nextUpdate passed " + relative(next, now) +
                               "; certificates it covers get \"revocation status unknown\" until "
                               "a current CRL is installed");
      else if (next - now <= crl_warning_seconds)
        out.warnings.push_back(key + ": " + path + ": CRL of " + issuer + " runs out (nextUpdate) " +
                               relative(next, now));
    }
  }
  return out;
}

}  // namespace cbagate::tls

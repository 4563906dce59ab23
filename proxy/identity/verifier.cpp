#include "identity/verifier.hpp"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <ctime>
#include <system_error>
#include <utility>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/openssl_error.hpp"
#include "identity/ad_certificate.hpp"

namespace cbagate::identity {
namespace {

struct shallow_stack_free {
  void operator()(STACK_OF(X509) * s) const noexcept { sk_X509_free(s); }
};
using shallow_x509_stack = std::unique_ptr<STACK_OF(X509), shallow_stack_free>;

// ---- loading -------------------------------------------------------------------------------

std::string openssl_reason() { return ossl::error_reason(); }

bool is_pem_end_of_input(unsigned long e) {
  return e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
}

struct load_error {
  errc code;
  std::string message;
};

std::string quoted(const char* option, const std::string& path) {
  return std::string(option) + " '" + path + "'";
}

// Every certificate of a PEM file (or the single certificate of a DER file), at least one.
bool load_certificates(const char* option, const std::string& path, errc code,
                       ossl::x509_stack_ptr& out, load_error& err) {
  ERR_clear_error();
  ossl::bio_ptr bio{BIO_new_file(path.c_str(), "rb")};
  if (!bio) {
    err = {code, quoted(option, path) + ": cannot open: " + openssl_reason()};
    return false;
  }
  out.reset(sk_X509_new_null());
  if (!out) {
    err = {errc::store_setup_failed, quoted(option, path) + ": " + openssl_reason()};
    return false;
  }
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    if (sk_X509_push(out.get(), x) <= 0) {
      X509_free(x);
      err = {errc::store_setup_failed, quoted(option, path) + ": " + openssl_reason()};
      return false;
    }
  }
  const int pem_count = sk_X509_num(out.get());
  if (pem_count > 0) {
    if (!is_pem_end_of_input(ERR_peek_last_error())) {
      err = {code, quoted(option, path) + ": malformed PEM after " + std::to_string(pem_count) +
                       " certificate(s): " + openssl_reason()};
      return false;
    }
    ERR_clear_error();
    return true;
  }
  const std::string pem_reason = openssl_reason();
  if (BIO_seek(bio.get(), 0) == 0) {
    if (X509* x = d2i_X509_bio(bio.get(), nullptr)) {
      if (sk_X509_push(out.get(), x) <= 0) {
        X509_free(x);
        err = {errc::store_setup_failed, quoted(option, path) + ": " + openssl_reason()};
        return false;
      }
      return true;
    }
  }
  err = {code, quoted(option, path) + ": no certificate found (PEM: " + pem_reason +
                   "; DER: " + openssl_reason() + ")"};
  return false;
}

// Every CRL of a PEM file, or the single CRL of a DER file, added to `store`.
bool load_crls(const std::string& path, X509_STORE* store, load_error& err) {
  ERR_clear_error();
  const char* option = "crl";
  ossl::bio_ptr bio{BIO_new_file(path.c_str(), "rb")};
  if (!bio) {
    err = {errc::crl_load_failed, quoted(option, path) + ": cannot open: " + openssl_reason()};
    return false;
  }
  int count = 0;
  while (X509_CRL* raw = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr)) {
    ossl::x509_crl_ptr crl{raw};
    if (X509_STORE_add_crl(store, crl.get()) != 1) {
      err = {errc::store_setup_failed, quoted(option, path) + ": " + openssl_reason()};
      return false;
    }
    ++count;
  }
  if (count > 0) {
    if (!is_pem_end_of_input(ERR_peek_last_error())) {
      err = {errc::crl_load_failed, quoted(option, path) + ": malformed PEM after " +
                                        std::to_string(count) + " CRL(s): " + openssl_reason()};
      return false;
    }
    ERR_clear_error();
    return true;
  }
  const std::string pem_reason = openssl_reason();
  if (BIO_seek(bio.get(), 0) == 0) {
    if (ossl::x509_crl_ptr crl{d2i_X509_CRL_bio(bio.get(), nullptr)}) {
      if (X509_STORE_add_crl(store, crl.get()) != 1) {
        err = {errc::store_setup_failed, quoted(option, path) + ": " + openssl_reason()};
        return false;
      }
      return true;
    }
  }
  err = {errc::crl_load_failed, quoted(option, path) + ": no CRL found (PEM: " + pem_reason +
                                    "; DER: " + openssl_reason() + ")"};
  return false;
}

// ---- describing a certificate --------------------------------------------------------------

void append_hex_escape(std::string& out, unsigned char c) {
  static constexpr char hex[] = "0123456789ABCDEF";
  out += '\\';
  out += hex[c >> 4];
  out += hex[c & 0x0F];
}

// RFC 2253 one-line form. XN_FLAG_RFC2253 already escapes control characters and every byte
// >= 0x80 (ASN1_STRFLGS_ESC_CTRL | ESC_MSB); the second pass makes the "pure printable ASCII"
// promise of client_identity independent of those flags (DEL included).
std::string name_to_string(const X509_NAME* name) {
  if (name == nullptr) return {};
  ossl::bio_ptr bio{BIO_new(BIO_s_mem())};
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return {};
  char* data = nullptr;
  const long len = BIO_ctrl(bio.get(), BIO_CTRL_INFO, 0, static_cast<void*>(&data));
  std::string out;
  if (len <= 0 || data == nullptr) return out;
  out.reserve(static_cast<std::size_t>(len));
  for (long i = 0; i < len; ++i) {
    const auto c = static_cast<unsigned char>(data[i]);
    if (c < 0x20 || c >= 0x7F) {
      append_hex_escape(out, c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string serial_hex(const X509* x) {
  const ASN1_INTEGER* serial = X509_get0_serialNumber(x);
  if (serial == nullptr) return {};
  std::unique_ptr<BIGNUM, ossl::deleter<BN_free>> bn{ASN1_INTEGER_to_BN(serial, nullptr)};
  if (!bn) return {};
  std::unique_ptr<char, ossl::deleter<[](char* p) { OPENSSL_free(p); }>> hex{BN_bn2hex(bn.get())};
  return hex ? std::string(hex.get()) : std::string();
}

std::string sha256_hex(const X509* x) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(x, EVP_sha256(), md, &n) != 1) return {};
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (unsigned int i = 0; i < n; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 0x0F];
  }
  return out;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-Compatible
// Low-Level Date Algorithms"); timegm() is not standard and time_t may be 32 bits.
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

std::int64_t unix_seconds(const ASN1_TIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  const std::int64_t days = days_from_civil(std::int64_t{tm.tm_year} + 1900,
                                            static_cast<unsigned>(tm.tm_mon + 1),
                                            static_cast<unsigned>(tm.tm_mday));
  return days * 86400 + tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
}

client_identity describe(X509* leaf) {
  client_identity id;
  id.presented = true;
  id.reason = rejection::invalid;
  id.subject = name_to_string(X509_get_subject_name(leaf));
  id.issuer = name_to_string(X509_get_issuer_name(leaf));
  id.serial = serial_hex(leaf);
  id.sha256 = sha256_hex(leaf);
  id.not_before = unix_seconds(X509_get0_notBefore(leaf));
  id.not_after = unix_seconds(X509_get0_notAfter(leaf));
  return id;
}

// ---- verification --------------------------------------------------------------------------

bool is_revocation_unknown(int err) {
  switch (err) {
    case X509_V_ERR_UNABLE_TO_GET_CRL:
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
    case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
    case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
    case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
    case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
    case X509_V_ERR_DIFFERENT_CRL_SCOPE:
    case X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION:
    case X509_V_ERR_CRL_PATH_VALIDATION_ERROR:
      return true;
    default:
      return false;
  }
}

rejection classify(int err) {
  switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED: return rejection::expired;
    case X509_V_ERR_CERT_NOT_YET_VALID: return rejection::not_yet_valid;
    case X509_V_ERR_CERT_REVOKED: return rejection::revoked;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_REJECTED: return rejection::untrusted;
    case X509_V_ERR_INVALID_PURPOSE: return rejection::wrong_eku;
    default: return is_revocation_unknown(err) ? rejection::revoked : rejection::invalid;
  }
}

// Errors the callback notes and lets OpenSSL continue past, so that a harder error found
// later (a signature, a revoked entry) still wins, and so that the certificate's own validity
// period wins over an unknown revocation status. Whatever is noted rejects the chain.
struct noted_errors {
  int validity = 0;  // CERT_HAS_EXPIRED / CERT_NOT_YET_VALID, first seen
  int validity_depth = 0;
  X509* validity_cert = nullptr;
  int revocation = 0;  // UNABLE_TO_GET_CRL, CRL_HAS_EXPIRED, CRL_NOT_YET_VALID, first seen
  int revocation_depth = 0;
  X509* revocation_cert = nullptr;
};

// Runs inside X509_verify_cert (C frames): must not throw, so it only copies ints and pointers.
extern "C" int note_soft_errors(int ok, X509_STORE_CTX* ctx) {
  if (ok == 1) return 1;
  auto* noted = static_cast<noted_errors*>(X509_STORE_CTX_get_ex_data(ctx, 0));
  if (noted == nullptr) return 0;
  const int err = X509_STORE_CTX_get_error(ctx);
  switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      if (noted->validity == 0) {
        noted->validity = err;
        noted->validity_depth = X509_STORE_CTX_get_error_depth(ctx);
        noted->validity_cert = X509_STORE_CTX_get_current_cert(ctx);
      }
      return 1;
    case X509_V_ERR_UNABLE_TO_GET_CRL:
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
      if (noted->revocation == 0) {
        noted->revocation = err;
        noted->revocation_depth = X509_STORE_CTX_get_error_depth(ctx);
        noted->revocation_cert = X509_STORE_CTX_get_current_cert(ctx);
      }
      return 1;
    default:
      return 0;
  }
}

std::string describe_error(int err, int depth, const X509* cert) {
  std::string d = X509_verify_cert_error_string(err);
  d += " (X509_V_ERR " + std::to_string(err) + ") at depth " + std::to_string(depth);
  if (cert != nullptr) d += " [" + name_to_string(X509_get_subject_name(cert)) + "]";
  switch (classify(err)) {
    case rejection::untrusted: d += ": the chain does not end at a client_ca anchor"; break;
    case rejection::wrong_eku:
      d += ": the sslclient purpose needs clientAuth in the extendedKeyUsage of each certificate "
           "that has one";
      break;
    case rejection::revoked:
      if (err == X509_V_ERR_CERT_REVOKED) break;
      if (err == X509_V_ERR_UNABLE_TO_GET_CRL) {
        d += ": no CRL loaded for its issuer; revocation status unknown, fail closed";
      } else if (err == X509_V_ERR_CRL_HAS_EXPIRED || err == X509_V_ERR_CRL_NOT_YET_VALID) {
        d += ": stale CRL; revocation status unknown, fail closed";
      } else {
        d += ": CRL unusable; revocation status unknown, fail closed";
      }
      break;
    default: break;
  }
  return d;
}

}  // namespace

expected<std::shared_ptr<const verifier>> verifier::make(const verifier_options& options,
                                                         std::string* error_detail) {
  std::shared_ptr<verifier> v{new verifier()};
  v->upn_ = options.upn;
  v->depth_ = options.verify_depth;
  v->check_crls_ = !options.crl_files.empty();
  v->issuers_ = options.issuers;

  load_error err{errc::store_setup_failed, "client verifier: cannot create X509_STORE"};
  const auto fail = [&]() -> expected<std::shared_ptr<const verifier>> {
    if (error_detail) *error_detail = err.message;
    return make_error_code(err.code);
  };

  v->store_.reset(X509_STORE_new());
  if (!v->store_) return fail();

  ossl::x509_stack_ptr anchors;
  if (!load_certificates("client_ca", options.client_ca_file, errc::ca_load_failed, anchors, err))
    return fail();
  int self_signed = 0;
  for (int i = 0; i < sk_X509_num(anchors.get()); ++i)
    if (X509_self_signed(sk_X509_value(anchors.get(), i), 1) == 1) ++self_signed;
  if (self_signed == 0) {
    // No chain can end here (no PARTIAL_CHAIN): every client would get 403.16 without a word.
    err = {errc::ca_load_failed,
           quoted("client_ca", options.client_ca_file) +
               ": no certificate in it is self-signed, so none can be a trust anchor; put the "
               "root there and the issuing CA in tls.client_intermediates and auth.issuing_cas "
               "(cbagate --check-config lists each certificate)"};
    return fail();
  }
  for (int i = 0; i < sk_X509_num(anchors.get()); ++i) {
    X509* x = sk_X509_value(anchors.get(), i);
    // Decode and cache the extensions now, so concurrent verifications only read them.
    X509_check_purpose(x, -1, 0);
    if (v->issuers_) v->issuers_->add(x);
    if (X509_STORE_add_cert(v->store_.get(), x) != 1) {
      err = {errc::store_setup_failed,
             quoted("client_ca", options.client_ca_file) + ": " + openssl_reason()};
      return fail();
    }
  }

  if (options.client_intermediates_file.empty()) {
    v->intermediates_.reset(sk_X509_new_null());
    if (!v->intermediates_) return fail();
  } else {
    if (!load_certificates("client_intermediates", options.client_intermediates_file,
                           errc::intermediates_load_failed, v->intermediates_, err))
      return fail();
    for (int i = 0; i < sk_X509_num(v->intermediates_.get()); ++i) {
      X509* x = sk_X509_value(v->intermediates_.get(), i);
      X509_check_purpose(x, -1, 0);
      if (v->issuers_) v->issuers_->add(x);
    }
  }

  v->issuing_cas_.reset(sk_X509_new_null());
  if (!v->issuing_cas_) return fail();
  if (!options.issuing_cas_file.empty()) {
    if (!load_certificates("auth.issuing_cas", options.issuing_cas_file,
                           errc::issuing_cas_load_failed, v->issuing_cas_, err))
      return fail();
    for (int i = 0; i < sk_X509_num(v->issuing_cas_.get()); ++i) {
      X509* x = sk_X509_value(v->issuing_cas_.get(), i);
      X509_check_purpose(x, -1, 0);
      if (X509_check_ca(x) == 0) {
        err = {errc::issuing_cas_load_failed,
               quoted("auth.issuing_cas", options.issuing_cas_file) + ": certificate " +
                   std::to_string(i + 1) + " [" + name_to_string(X509_get_subject_name(x)) +
                   "] is not a CA certificate"};
        return fail();
      }
      if (v->issuers_) v->issuers_->add(x);
      // The issuing CAs help build paths like client_intermediates (never as anchors).
      X509_up_ref(x);
      if (sk_X509_push(v->intermediates_.get(), x) <= 0) {
        X509_free(x);
        return fail();
      }
    }
  }
  v->upn_suffixes_ = options.upn_suffixes;
  v->templates_ = options.certificate_templates;

  for (const std::string& path : options.crl_files)
    if (!load_crls(path, v->store_.get(), err)) return fail();

  X509_VERIFY_PARAM* param = X509_STORE_get0_param(v->store_.get());
  const int depth = static_cast<int>(std::min(options.verify_depth, 100u));
  unsigned long flags = 0;
  if (v->check_crls_) flags |= X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL;
  if (X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_CLIENT) != 1 ||
      X509_VERIFY_PARAM_set_trust(param, X509_TRUST_SSL_CLIENT) != 1 ||
      (flags != 0 && X509_VERIFY_PARAM_set_flags(param, flags) != 1)) {
    err = {errc::store_setup_failed, "client verifier: cannot set verify parameters: " +
                                         openssl_reason()};
    return fail();
  }
  X509_VERIFY_PARAM_set_depth(param, depth);
  ERR_clear_error();
  return std::shared_ptr<const verifier>{std::move(v)};
}

client_identity verifier::no_certificate() {
  client_identity id;
  id.presented = false;
  id.reason = rejection::no_certificate;
  id.detail = "no client certificate presented";
  return id;
}

client_identity verifier::verify(X509* leaf, STACK_OF(X509) * untrusted_chain,
                                 std::optional<std::int64_t> at_unix_time,
                                 chain_validity* validity) const {
  if (leaf == nullptr) return no_certificate();
  // Called from inside a TLS handshake: keep the thread's error queue as the handshake left it.
  ERR_set_mark();
  client_identity id = describe(leaf);

  const auto finish = [&](rejection r, std::string detail) {
    ERR_pop_to_mark();
    id.reason = r;
    id.detail = std::move(detail);
    return std::move(id);
  };

  shallow_x509_stack untrusted{sk_X509_new_null()};
  if (!untrusted) return finish(rejection::invalid, "out of memory");
  if (untrusted_chain != nullptr) {
    for (int i = 0; i < sk_X509_num(untrusted_chain); ++i)
      if (sk_X509_push(untrusted.get(), sk_X509_value(untrusted_chain, i)) <= 0)
        return finish(rejection::invalid, "out of memory");
  }
  for (int i = 0; i < sk_X509_num(intermediates_.get()); ++i)
    if (sk_X509_push(untrusted.get(), sk_X509_value(intermediates_.get(), i)) <= 0)
      return finish(rejection::invalid, "out of memory");

  ossl::x509_store_ctx_ptr ctx{X509_STORE_CTX_new()};
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store_.get(), leaf, untrusted.get()) != 1)
    return finish(rejection::invalid, "X509_STORE_CTX_init failed");
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  if (at_unix_time)
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()),
                               static_cast<std::time_t>(*at_unix_time));
  noted_errors noted;
  X509_STORE_CTX_set_ex_data(ctx.get(), 0, &noted);  // index 0 is the application's
  X509_STORE_CTX_set_verify_cb(ctx.get(), &note_soft_errors);

  const int rc = X509_verify_cert(ctx.get());
  if (rc != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    if (rc < 0 || err == X509_V_OK)
      return finish(rejection::invalid, "X509_verify_cert failed without a reason");
    return finish(classify(err), describe_error(err, X509_STORE_CTX_get_error_depth(ctx.get()),
                                                X509_STORE_CTX_get_current_cert(ctx.get())));
  }
  if (noted.validity == 0 && noted.revocation == 0 &&
      X509_STORE_CTX_get_error(ctx.get()) != X509_V_OK) {
    // Success with an error left set means a callback overrode something we did not note:
    // never accept on that (fail closed).
    const int err = X509_STORE_CTX_get_error(ctx.get());
    return finish(rejection::invalid, describe_error(err, X509_STORE_CTX_get_error_depth(ctx.get()),
                                                     X509_STORE_CTX_get_current_cert(ctx.get())));
  }
  if (noted.validity != 0)
    return finish(classify(noted.validity),
                  describe_error(noted.validity, noted.validity_depth, noted.validity_cert));
  if (noted.revocation != 0)
    return finish(rejection::revoked,
                  describe_error(noted.revocation, noted.revocation_depth, noted.revocation_cert));

  // Stricter than the sslclient purpose, which accepts a leaf without any EKU: Windows CBA
  // (and IIS client certificate mapping) requires the Client Authentication EKU.
  if ((X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE) == 0)
    return finish(rejection::wrong_eku,
                  "leaf has no extendedKeyUsage extension; clientAuth (1.3.6.1.5.5.7.3.2) is "
                  "required");
  if ((X509_get_extended_key_usage(leaf) & XKU_SSL_CLIENT) == 0)
    return finish(rejection::wrong_eku,
                  "leaf extendedKeyUsage lacks clientAuth (1.3.6.1.5.5.7.3.2)");

  // The trust limits of [auth] (issue 12): which CA issued it (AD's NTAuth store holds issuing
  // CAs, not roots), which AD CS template, which UPN domain. 403.12, "mapper denied access".
  STACK_OF(X509)* verified = X509_STORE_CTX_get0_chain(ctx.get());
  if (sk_X509_num(issuing_cas_.get()) > 0) {
    X509* issuer = verified != nullptr && sk_X509_num(verified) > 1 ? sk_X509_value(verified, 1)
                                                                    : nullptr;
    bool allowed = false;
    for (int i = 0; issuer != nullptr && !allowed && i < sk_X509_num(issuing_cas_.get()); ++i)
      allowed = same_ca(issuer, sk_X509_value(issuing_cas_.get(), i));
    if (!allowed)
      return finish(rejection::issuer_not_allowed,
                    "issued by [" + (issuer ? name_to_string(X509_get_subject_name(issuer))
                                            : std::string("itself")) +
                        "], which is not one of auth.issuing_cas");
  }
  if (!templates_.empty()) {
    const template_info t = read_template(leaf);
    if (!template_allowed(t, templates_)) {
      std::string d = !t.error.empty() ? t.error
                      : t.oid.empty() && t.name.empty()
                          ? std::string("no certificate template extension")
                          : "template " + (t.oid.empty() ? std::string() : t.oid) +
                                (!t.oid.empty() && !t.name.empty() ? " / " : "") +
                                (t.name.empty() ? std::string() : "\"" + t.name + "\"");
      return finish(rejection::template_not_allowed,
                    d + ", not one of auth.certificate_templates");
    }
  }
  upn_result upn = extract_upn(leaf, upn_);
  // No UPN at all may still be a user: the directory finds the account by the certificate's
  // strong strings (auth.upn_sources "directory"). A bad or doubled UPN never falls back.
  const bool upn_by_directory = upn.reason == rejection::no_upn && upn_.from_directory;
  if (!upn.ok() && !upn_by_directory) return finish(upn.reason, std::move(upn.detail));
  if (!upn_by_directory && !upn_suffixes_.empty() && !upn_suffix_allowed(upn.upn, upn_suffixes_))
    return finish(rejection::upn_suffix_not_allowed,
                  "UPN domain " + upn.upn.substr(upn.upn.rfind('@') + 1) +
                      " is not one of auth.upn_suffixes");
  id.upn = std::move(upn.upn);
  id.ad = read_ad_facts(leaf);
  // What revocation checking needs, computed once here (DER bytes and hashes, no crypto per
  // request); the CAs of the chain join the registry that CRL and OCSP signatures are
  // verified against (known ones cost a lookup).
  id.chain = refs_of_chain(verified);
  if (issuers_ && verified != nullptr) {
    for (int i = 1; i < sk_X509_num(verified); ++i) issuers_->add(sk_X509_value(verified, i));
  }
  if (validity != nullptr) {
    validity->not_before = id.not_before;
    validity->not_after = id.not_after;
    for (int i = 0; verified != nullptr && i < sk_X509_num(verified); ++i) {
      const X509* x = sk_X509_value(verified, i);
      validity->not_before = std::max(validity->not_before, unix_seconds(X509_get0_notBefore(x)));
      validity->not_after = std::min(validity->not_after, unix_seconds(X509_get0_notAfter(x)));
    }
  }
  return finish(rejection::none, {});
}

}  // namespace cbagate::identity

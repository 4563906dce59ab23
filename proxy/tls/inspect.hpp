#pragma once
// The TLS files of a configuration, read the way start-up reads them, with messages an
// administrator can act on: which file, what is wrong with it, how to fix it (issue 13).
//  - Certificates (tls.certificate, [[tls.sni]] certificate, tls.client_ca,
//    tls.client_intermediates, upstream.ca): PEM (one or more) or one DER certificate.
//  - Private keys: PEM or DER, never encrypted (a passphrase would be asked for on a terminal
//    at every start; there is none under a supervisor).
//  - CRLs (tls.crl): PEM (one or more) or one DER CRL.
//  - A PKCS#12 (.pfx/.p12) bundle is refused with the openssl commands that convert it.
// `--check-config` and start-up run the same inspection; server_context loads the server
// certificates and keys through load_certificates / load_private_key too, so the check never
// accepts what start-up refuses (or the reverse).
#include <cstdint>
#include <string>
#include <vector>

#include "common/openssl_ptr.hpp"
#include "config/snapshot.hpp"

namespace cbagate::tls {

/** Certificates in file order. On failure: empty, and `error` names the file and the cause. */
std::vector<ossl::x509_ptr> load_certificates(const std::string& path, std::string& error);

/** The one private key of a file. On failure: null, and `error` names the file and the cause
 *  (an encrypted key, a certificate where a key belongs, a PKCS#12 bundle, garbage). */
ossl::evp_pkey_ptr load_private_key(const std::string& path, std::string& error);

/** CRLs in file order. On failure: empty, and `error` names the file and the cause. */
std::vector<ossl::x509_crl_ptr> load_crls(const std::string& path, std::string& error);

/** One certificate whose lifetime is watched (metrics, warnings). */
struct lifetime {
  std::string kind;     ///< "server", "sni", "client_ca", "client_intermediate", "upstream_ca"
  std::string subject;  ///< RFC 2253 subject
  std::string file;
  std::int64_t not_after = 0;  ///< unix seconds
  std::string issuer;          ///< RFC 2253 issuer
};

/** One CRL file's next update (metrics, warnings). */
struct crl_lifetime {
  std::string issuer;  ///< RFC 2253 issuer
  std::string file;
  std::int64_t next_update = 0;  ///< unix seconds; 0 = the CRL has none
};

/** What inspect() found. Errors stop start-up; warnings are logged (and printed by the check). */
struct inspection {
  std::vector<std::string> errors;
  std::vector<std::string> warnings;
  std::vector<lifetime> certificates;
  std::vector<crl_lifetime> crls;

  bool ok() const noexcept { return errors.empty(); }
};

/** How far ahead an expiry is announced. */
inline constexpr std::int64_t certificate_warning_seconds = 30 * 86400;
inline constexpr std::int64_t crl_warning_seconds = 7 * 86400;

/**
 * Reads every certificate, key and CRL file of `cfg` (the [tls] section, [[tls.sni]] and
 * upstream.ca) at time `now` (unix seconds):
 *  - errors: unreadable or unparsable files, PKCS#12 bundles, encrypted keys, a key that does not
 *    match its certificate, a key or certificate file holding the other kind of object;
 *  - warnings: a server certificate file without its chain (one non-self-signed certificate), a
 *    server or CA certificate expired or expiring within 30 days, a CRL past its nextUpdate or
 *    within 7 days of it.
 * Every message starts with the configuration key and the file's path. Never throws.
 */
inspection inspect(const config::snapshot& cfg, std::int64_t now);

/** X509 notAfter (or notBefore) as unix seconds; 0 when it cannot be read. */
std::int64_t unix_time(const ASN1_TIME* t) noexcept;

/** "in 12 days", "3 hours ago": a span to an instant relative to now, for messages. */
std::string relative(std::int64_t when, std::int64_t now);

}  // namespace cbagate::tls

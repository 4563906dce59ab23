#pragma once
// Client chain verification: trust material loaded once, then one `verify` per handshake.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <openssl/x509.h>

#include "common/expected.hpp"
#include "common/openssl_ptr.hpp"
#include "identity/cert_ref.hpp"
#include "identity/client_identity.hpp"
#include "identity/errc.hpp"
#include "identity/upn.hpp"

namespace cbagate::identity {

/** The trust material and policy of a verifier (config `tls.*` and `auth.upn_sources`). */
struct verifier_options {
  std::string client_ca_file;             ///< PEM (or one DER) trust anchors; at least one cert
  std::string client_intermediates_file;  ///< optional PEM intermediates; "" = none. Never anchors
  /// PEM (one or more CRLs) or DER; empty = no CRL check in the chain verification. The proxy
  /// leaves this empty: revocation is decided per request by revocation::checker (issue 5),
  /// so chain verification is about trust, validity, EKU and UPN only. Kept for the tools and
  /// tests that want OpenSSL's own CRL check.
  std::vector<std::string> crl_files;
  upn_options upn;
  unsigned verify_depth = 5;  ///< most intermediates allowed (X509_VERIFY_PARAM_set_depth)
  /// Trust limits of [auth] (issue 12). `issuing_cas_file`: PEM CAs, one of which must be the
  /// leaf's direct issuer ("" = any); they also help build paths (never anchors).
  std::string issuing_cas_file;
  /// UPN domains accepted (auth.upn_suffixes), ASCII case-insensitive; empty = any.
  std::vector<std::string> upn_suffixes;
  /// AD CS templates accepted (auth.certificate_templates): dotted OIDs (v2 template
  /// extension) or names (v1 extension); empty = no template required.
  std::vector<std::string> certificate_templates;
  /// Process-wide registry of CA certificates (optional): `make` adds the anchors and the
  /// configured intermediates; each accepted chain adds its certificates above the leaf.
  /// Revocation checking verifies CRL and OCSP signatures against it.
  std::shared_ptr<issuer_registry> issuers;
};

/** The span in which every certificate of a verified chain (anchor included) is within its
 *  validity period: the latest notBefore and the earliest notAfter, unix seconds. */
struct chain_validity {
  std::int64_t not_before = 0;
  std::int64_t not_after = 0;
};

/**
 * Verifies client certificate chains and turns them into `client_identity` values.
 *
 * Policy (DESIGN.md step 5, STYLE.md 5.5):
 * - Anchors are the certificates of `client_ca_file` only. Certificates sent by the peer and
 *   those of `client_intermediates_file` only help build the path; a chain must end at a
 *   self-signed anchor (no X509_V_FLAG_PARTIAL_CHAIN). No system trust store.
 * - Purpose sslclient (X509_PURPOSE_SSL_CLIENT, trust X509_TRUST_SSL_CLIENT) and `verify_depth`.
 * - The leaf must carry an extendedKeyUsage extension that lists clientAuth. OpenSSL accepts a
 *   leaf without any EKU; Windows certificate logon and IIS CBA require Client Authentication
 *   (1.3.6.1.5.5.7.3.2), and a certificate minted for another purpose must not log anyone in.
 * - With CRLs configured: X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL, i.e. every
 *   certificate of the chain, the root included, needs a current CRL from its issuer. A
 *   certificate whose revocation status cannot be established (no CRL for its issuer, CRL
 *   past nextUpdate or before thisUpdate, bad CRL signature, CRL issuer not found, CRL of the
 *   wrong scope or with an unknown critical extension) is rejected as `revoked` (403.13,
 *   "status unknown, fail closed"): it is a revocation problem, not a flaw of the certificate,
 *   and 403.17 would tell the user to renew a certificate that is fine.
 * - Precedence when a chain has several problems: a hard failure (untrusted, bad signature,
 *   wrong purpose, listed on a CRL) wins; then the certificate's own validity period
 *   (expired / not_yet_valid); then an unknown revocation status (revoked, "stale CRL" or
 *   "no CRL"). So an expired certificate reads `expired` even when the CRL is also stale.
 * - Then the trust limits of [auth], each 403.12 (identity::iis_substatus): the leaf's direct
 *   issuer must be one of `issuing_cas_file` (same subject and key; issuer_not_allowed), the
 *   template one of `certificate_templates` (template_not_allowed); then the UPN
 *   (`extract_upn` with `verifier_options::upn`), whose domain must be one of `upn_suffixes`
 *   (upn_suffix_not_allowed). Checked in that order.
 * - On acceptance `client_identity::ad` holds what directory mapping reads (read_ad_facts).
 * - On acceptance, `client_identity::chain` holds the refs of the verified chain (leaf first,
 *   anchor excluded; identity::refs_of_chain) and the chain's CA certificates are added to
 *   `verifier_options::issuers` when one was given.
 *
 * Error mapping of X509_verify_cert: CERT_HAS_EXPIRED -> expired; CERT_NOT_YET_VALID ->
 * not_yet_valid; CERT_REVOKED -> revoked; UNABLE_TO_GET_ISSUER_CERT(_LOCALLY),
 * UNABLE_TO_VERIFY_LEAF_SIGNATURE, SELF_SIGNED_CERT_IN_CHAIN, DEPTH_ZERO_SELF_SIGNED_CERT,
 * CERT_UNTRUSTED, CERT_REJECTED -> untrusted; INVALID_PURPOSE -> wrong_eku; the CRL status
 * errors above -> revoked; anything else -> invalid. `detail` holds OpenSSL's reason, the
 * depth and the subject of the certificate concerned.
 *
 * Thread-safety: immutable after `make`; `verify` may run concurrently on any thread.
 */
class verifier {
 public:
  /**
   * Loads the trust material.
   * @param error_detail when not null, receives on failure a message naming the option, the
   *        file and OpenSSL's reason ("client_ca '/etc/x.pem': no certificate found: ...").
   * @return the verifier, or errc::ca_load_failed / intermediates_load_failed /
   *         crl_load_failed / issuing_cas_load_failed / store_setup_failed.
   */
  static expected<std::shared_ptr<const verifier>> make(const verifier_options& options,
                                                        std::string* error_detail = nullptr);

  /**
   * Verifies one presented chain and describes the leaf.
   * @param leaf the client's certificate; null gives `no_certificate()`. Not modified in any
   *        way visible to the caller (OpenSSL caches decoded extensions inside it).
   * @param untrusted_chain the certificates the peer sent (may include the leaf); may be null.
   * @param at_unix_time verification time for tests; empty = now.
   * @param validity when not null and the chain is accepted, receives the validity span of the
   *        verified chain (for callers that remember the outcome, tls::chain_cache).
   * @return subject, issuer, serial, sha256 and validity are filled whenever a leaf exists,
   *         also on rejection; `upn` only when accepted. Leaves the thread's OpenSSL error
   *         queue as it was (safe inside a handshake callback).
   */
  client_identity verify(X509* leaf, STACK_OF(X509) * untrusted_chain,
                         std::optional<std::int64_t> at_unix_time = {},
                         chain_validity* validity = nullptr) const;

  /** The identity of a connection without a certificate: presented false, 403.7. */
  static client_identity no_certificate();

  /**
   * The store holding the anchors and CRLs, for tls/ (e.g. SSL_CTX_set1_verify_cert_store).
   * Its X509_VERIFY_PARAM carries the purpose, depth and CRL flags. Do not add to it.
   */
  X509_STORE* store() const noexcept { return store_.get(); }

  /** The configured intermediates (owned by the verifier; may be empty, never null). */
  const STACK_OF(X509) * intermediates() const noexcept { return intermediates_.get(); }

  /** Whether CRLs are configured (and so checked for the whole chain). */
  bool checks_crls() const noexcept { return check_crls_; }

  const upn_options& upn() const noexcept { return upn_; }

  /** Whether any trust limit of [auth] is configured. */
  bool has_limits() const noexcept {
    return sk_X509_num(issuing_cas_.get()) > 0 || !upn_suffixes_.empty() || !templates_.empty();
  }

 private:
  verifier() = default;

  ossl::x509_store_ptr store_;
  ossl::x509_stack_ptr intermediates_;
  ossl::x509_stack_ptr issuing_cas_;  // auth.issuing_cas; empty = any issuer
  std::vector<std::string> upn_suffixes_;
  std::vector<std::string> templates_;
  upn_options upn_;
  std::shared_ptr<issuer_registry> issuers_;
  unsigned depth_ = 5;
  bool check_crls_ = false;
};

}  // namespace cbagate::identity

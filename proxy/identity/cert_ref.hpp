#pragma once
// What revocation checking needs to know of one certificate of a verified chain, as plain
// bytes: computed once at the full handshake, kept with the connection's identity and carried
// inside session tickets, so kept-alive and resumed connections are re-checked per request
// without the certificates themselves.
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <openssl/x509.h>

#include "common/openssl_ptr.hpp"

namespace cbagate::identity {

/** SHA-1 digests as in an OCSP CertID (RFC 6960 4.1.1). */
using sha1_digest = std::array<std::uint8_t, 20>;

/** The issuer half of a CertID: which CA signed a certificate (and signs its CRLs). */
struct issuer_id {
  sha1_digest name_hash{};  ///< SHA-1 of the issuer's DER-encoded subject name
  sha1_digest key_hash{};   ///< SHA-1 of the issuer's subjectPublicKey BIT STRING value
  bool operator==(const issuer_id&) const = default;
};

struct issuer_id_hash {
  std::size_t operator()(const issuer_id& id) const noexcept {
    std::size_t h = 0;
    for (std::size_t i = 0; i < sizeof h; ++i) h = (h << 8) | id.key_hash[i];
    return h;
  }
};

/** One non-anchor certificate of a verified chain. */
struct cert_ref {
  issuer_id issuer;
  std::string serial;                   ///< content octets of the serialNumber INTEGER (big-endian)
  std::vector<std::string> cdp_urls;    ///< http:// CRL distribution point URIs, in order
  std::vector<std::string> ocsp_urls;   ///< http:// AIA OCSP URIs, in order
  bool operator==(const cert_ref&) const = default;
};

/** Leaf first; the trust anchor that ends the chain is not included. */
using chain_refs = std::vector<cert_ref>;

/**
 * The CA certificates seen as issuers in verified chains, plus the configured anchors and
 * intermediates: what CRL and OCSP signatures are verified against, also for a connection
 * that resumed without a handshake. Process-wide (survives reloads), bounded, thread-safe.
 * Only certificates that were part of a chain verified up to a configured anchor get in.
 */
class issuer_registry {
 public:
  explicit issuer_registry(std::size_t max_entries = 4096) : max_(max_entries) {}

  /** Adds `ca` under its own issuer_id (as a subject it issues under). Keeps the first. */
  void add(X509* ca);

  /** The certificate whose name and key hash to `id`, or null. Up-refs the result. */
  ossl::x509_ptr find(const issuer_id& id) const;

  /** Every certificate whose subject name equals `name` (a CRL's issuer), up-ref'd. Linear in
   *  the registry size: for loading and fetching CRLs, not for the request path. */
  std::vector<ossl::x509_ptr> find_by_name(const X509_NAME* name) const;

  std::size_t size() const;

 private:
  std::size_t max_;
  mutable std::mutex mu_;
  std::unordered_map<issuer_id, ossl::x509_ptr, issuer_id_hash> by_id_;
};

/** The content octets of a DER INTEGER (a serialNumber as cert_ref::serial holds it). */
std::string serial_octets(const ASN1_INTEGER* serial);

/** The issuer_id under which `ca` issues certificates (its own name and key). */
issuer_id issuer_id_of(const X509* ca);

/**
 * The refs of a verified chain (leaf first, anchor last): one per certificate but the last.
 * Reads CDP (distributionPoint fullName URIs) and AIA OCSP URIs; keeps http:// ones only.
 */
chain_refs refs_of_chain(STACK_OF(X509) * verified_chain);

}  // namespace cbagate::identity

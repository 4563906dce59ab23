#pragma once
// detail: one CRL reduced to what a lookup needs (issuer, validity window, sorted serials), and
// the parsing/verification shared by tls.crl files and CDP downloads.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <openssl/x509.h>

#include "common/openssl_ptr.hpp"
#include "identity/cert_ref.hpp"

namespace cbagate::revocation::detail {

/** CRLReason codes (RFC 5280 5.3.1); no_reason when the entry has no reason extension. */
inline constexpr std::uint8_t no_reason = 0xff;
inline constexpr std::uint8_t remove_from_crl = 8;

/** "keyCompromise", ...; "revoked" for no_reason or an unknown code. */
std::string_view reason_name(std::uint8_t code) noexcept;

/** One verified CRL. Immutable once built. */
struct crl_index {
  identity::issuer_id issuer;
  std::int64_t this_update = 0;              ///< unix seconds
  std::optional<std::int64_t> next_update;   ///< unix seconds
  std::vector<std::string> serials;          ///< sorted content octets of revoked serials
  std::vector<std::uint8_t> reasons;         ///< parallel to serials
  std::string source;                        ///< path or URL
  bool only_user_certs = false;              ///< issuingDistributionPoint scope
  bool only_ca_certs = false;

  /** The reason code of `serial` when listed, else null. Binary search, no allocation. */
  const std::uint8_t* find(std::string_view serial) const noexcept;
  /** Whether this CRL covers the certificate at `index` of a chain (0 = leaf = user cert). */
  bool covers(std::size_t index) const noexcept {
    return index == 0 ? !only_ca_certs : !only_user_certs;
  }
};

/** The CRLs of tls.crl by issuer. */
struct crl_set {
  std::unordered_map<identity::issuer_id, std::shared_ptr<const crl_index>,
                     identity::issuer_id_hash>
      by_issuer;
  std::size_t count = 0;
};

/** Every CRL in `data`: several PEM CRLs, or one DER CRL. On failure `err` says why. */
std::vector<ossl::x509_crl_ptr> parse_crls(BIO* data, std::string& err);

/**
 * Verifies `crl` against its issuer from `issuers` (by name, then signature) and indexes it.
 * Refuses delta CRLs, indirect CRLs and unhandled critical extensions.
 * @return null with `err` set ("issuer 'CN=x' is not a known CA", "bad signature ...").
 */
std::shared_ptr<const crl_index> index_crl(X509_CRL* crl, const identity::issuer_registry& issuers,
                                           std::string source, std::string& err);

/** Unix seconds of an ASN1_TIME; nullopt when unparsable. */
std::optional<std::int64_t> unix_time(const ASN1_TIME* t);

/** Drains this thread's OpenSSL error queue into one line. */
std::string openssl_reason();

}  // namespace cbagate::revocation::detail

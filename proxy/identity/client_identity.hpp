#pragma once
// The value every module downstream of tls/ sees of a client certificate. No OpenSSL types in
// its members (cert_ref.hpp holds plain bytes; its header declares the registry too).
#include <cstdint>
#include <string>
#include <string_view>

#include "identity/cert_ref.hpp"

namespace cbagate::identity {

/** Why a presented (or absent) certificate does not yield an identity. `none` = accepted. */
enum class rejection : std::uint8_t {
  none = 0,
  no_certificate,    // nothing presented                              -> 403.7
  untrusted,         // chain does not end at a configured anchor      -> 403.16
  invalid,           // bad signature, malformed, wrong purpose, ...   -> 403.16
  wrong_eku,         // no clientAuth extended key usage               -> 403.16
  expired,           // leaf or a CA past notAfter                     -> 403.17
  not_yet_valid,     // leaf or a CA before notBefore                  -> 403.17
  revoked,           // on a CRL (or status unknown, fail closed)      -> 403.13
  no_upn,            // no UPN from the configured sources             -> 403.16
  multi_upn,         // more than one UPN                              -> 403.16
  bad_upn_encoding,  // not UTF8String, control characters, too long   -> 403.16
  // Trust limits of [auth] (issue 12): IIS's 403.12 "mapper denied access".
  issuer_not_allowed,      // the leaf's direct issuer is not in auth.issuing_cas   -> 403.12
  upn_suffix_not_allowed,  // the UPN's domain is not in auth.upn_suffixes          -> 403.12
  template_not_allowed,    // no AD CS template of auth.certificate_templates       -> 403.12
};

/** The last enumerator (loops over every reason, ticket decoding bounds). */
inline constexpr rejection last_rejection = rejection::template_not_allowed;

/** Stable snake_case name, used in logs and metrics ("no_upn"). */
std::string_view to_string(rejection r) noexcept;

/** The IIS 403 substatus for a rejection: 7, 12, 13, 16 or 17; 0 for `none`. */
int iis_substatus(rejection r) noexcept;

/**
 * What Active Directory's certificate mapping reads of an accepted leaf (identity/
 * ad_certificate.hpp, docs/directory.md). Every string is printable ASCII/UTF-8 without control
 * characters. Computed once per full handshake; carried in session tickets.
 */
struct ad_facts {
  std::string issuer_dn;   ///< AD form of the issuer DN ("DC=test,DC=lab,CN=Lab Issuing CA")
  std::string subject_dn;  ///< AD form of the subject DN
  std::string ski;         ///< upper-case hex of the SubjectKeyIdentifier extension; "" = none
  std::string sha1;        ///< upper-case hex SHA-1 of the whole DER certificate (thumbprint)
  std::string sid;         ///< SID string of the SID security extension; "" = none
  std::string sid_error;   ///< non-empty: the SID extension is present but malformed
  bool operator==(const ad_facts&) const = default;
};

/**
 * The outcome of one certificate verification, computed once per TLS connection.
 * All strings are printable ASCII/UTF-8 with no control characters (safe to log).
 */
struct client_identity {
  bool presented = false;                      // the client sent a certificate
  rejection reason = rejection::no_certificate;
  std::string upn;          // set only when reason == none
  std::string subject;      // RFC 2253 one-line form
  std::string issuer;       // RFC 2253 one-line form
  std::string serial;       // upper-case hex, no separators
  std::string sha256;       // lower-case hex of the leaf DER
  std::int64_t not_before = 0;  // unix seconds
  std::int64_t not_after = 0;   // unix seconds
  std::string detail;       // verifier's own words on a rejection (e.g. OpenSSL's reason)
  /** What revocation checking needs of the verified chain: leaf first, the trust anchor
   *  excluded. Filled on acceptance only (empty otherwise); carried in session tickets. */
  chain_refs chain{};
  /** What directory mapping needs (issue 12); filled on acceptance only. */
  ad_facts ad{};

  bool ok() const noexcept { return reason == rejection::none; }
};

}  // namespace cbagate::identity

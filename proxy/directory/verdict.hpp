#pragma once
// Certificate + directory entries -> verdict (KB5014754 full enforcement, docs/directory.md).
// Pure: the entries come from ldap_client, the time from the caller.
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "directory/mapping.hpp"

namespace cbagate::directory {

/** The outcome of mapping one certificate. Values are stable (metrics, logs, 403.12 codes). */
enum class verdict : std::uint8_t {
  allowed,               ///< one account, strongly bound, enabled, unlocked, unexpired
  not_found,             ///< no user account has the certificate's UPN
  ambiguous,             ///< more than one account matches
  no_strong_mapping,     ///< only weak mappings (or the UPN alone); KB5014754 denies
  sid_mismatch,          ///< the SID extension names another account (or is malformed)
  disabled,              ///< userAccountControl ACCOUNTDISABLE (0x2)
  locked_out,            ///< msDS-User-Account-Control-Computed UF_LOCKOUT, or lockoutTime recent
  account_expired,       ///< accountExpires has passed
  issuer_not_in_ntauth,  ///< directory.ntauth: the issuing CA is not in the NTAuth store
  unavailable,           ///< no directory server answered in time (503, never cached)
};

inline constexpr verdict last_verdict = verdict::unavailable;

/** "allowed", "not_found", ... (the 403.12 body code and access-log value). */
std::string_view to_string(verdict v) noexcept;

/** One user entry as read from the directory. */
struct account {
  std::string dn;
  std::string sam_account_name;
  std::string upn;
  std::vector<std::uint8_t> object_sid;
  std::int64_t user_account_control = 0;
  std::optional<std::int64_t> uac_computed;  ///< msDS-User-Account-Control-Computed, if returned
  std::int64_t account_expires = 0;          ///< FILETIME; 0 or INT64_MAX = never
  std::int64_t lockout_time = 0;             ///< FILETIME; 0 = not locked
  std::vector<std::string> alt_security_identities;
};

/** A verdict with what explains it. */
struct mapping_result {
  verdict outcome = verdict::unavailable;
  std::string detail;   ///< log-safe reason ("altSecurityIdentities: 2 values, none strong ...")
  std::string via;      ///< allowed: the mapping that bound it ("X509:<SKI>..." or "SID extension")
  std::string dn;       ///< the account, when exactly one was found
  std::string sam_account_name;
  std::string upn;      ///< the account's userPrincipalName

  bool allowed() const noexcept { return outcome == verdict::allowed; }
};

/**
 * Decides for a certificate and the entries the UPN search returned (at most 2 are read):
 *  0 entries -> not_found; 2 -> ambiguous; then the binding: a strong altSecurityIdentities
 *  value matching every tag wins; else a SID extension must equal objectSid (a malformed one,
 *  or another account's, is sid_mismatch); else no_strong_mapping. Then the account state:
 *  disabled, locked_out (UF_LOCKOUT 0x10 in msDS-User-Account-Control-Computed when returned,
 *  else lockoutTime + lockout_duration > now), account_expired (0 < accountExpires <= now).
 * @param now_unix the current time, unix seconds.
 */
mapping_result decide(const certificate_view& cert, std::span<const account> found,
                      std::int64_t now_unix, std::chrono::seconds lockout_duration);

}  // namespace cbagate::directory

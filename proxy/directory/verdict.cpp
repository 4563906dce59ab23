#include "directory/verdict.hpp"

#include <limits>

namespace cbagate::directory {

std::string_view to_string(verdict v) noexcept {
  switch (v) {
    case verdict::allowed: return "allowed";
    case verdict::not_found: return "not_found";
    case verdict::ambiguous: return "ambiguous";
    case verdict::no_strong_mapping: return "no_strong_mapping";
    case verdict::sid_mismatch: return "sid_mismatch";
    case verdict::disabled: return "disabled";
    case verdict::locked_out: return "locked_out";
    case verdict::account_expired: return "account_expired";
    case verdict::issuer_not_in_ntauth: return "issuer_not_in_ntauth";
    case verdict::unavailable: return "unavailable";
  }
  return "unavailable";
}

namespace {

constexpr std::int64_t uf_accountdisable = 0x2;
constexpr std::int64_t uf_lockout = 0x10;

mapping_result deny(verdict v, std::string detail) {
  mapping_result r;
  r.outcome = v;
  r.detail = std::move(detail);
  return r;
}

}  // namespace

mapping_result decide(const certificate_view& cert, std::span<const account> found,
                      std::int64_t now_unix, std::chrono::seconds lockout_duration) {
  // Located by the UPN, or (no UPN: auth.upn_sources "directory") by the strong strings.
  const std::string by = cert.upn.empty()
                             ? std::string("with one of the certificate's strong altSecurityIdentities")
                             : "with userPrincipalName " + cert.upn;
  if (found.empty()) return deny(verdict::not_found, "no user account " + by);
  if (found.size() > 1)
    return deny(verdict::ambiguous, "more than one user account " + by + " (" + found[0].dn +
                                        ", " + found[1].dn + ")");
  const account& a = found[0];
  mapping_result r;
  r.dn = a.dn;
  r.sam_account_name = a.sam_account_name;
  r.upn = a.upn;

  // 1. Strong binding (KB5014754 full enforcement; Samba pk_check_certificate_binding order):
  //    a matching strong altSecurityIdentities value, else the SID extension, else deny.
  std::size_t strong_values = 0;
  for (const std::string& value : a.alt_security_identities) {
    const alt_security_identity m = parse_alt_security_identity(value);
    if (!m.strong) continue;
    ++strong_values;
    if (strong_match(m, cert)) {
      r.via = value;
      break;
    }
  }
  if (r.via.empty()) {
    if (!cert.sid_error.empty()) {
      r.outcome = verdict::sid_mismatch;
      r.detail = "malformed SID extension: " + cert.sid_error;
      return r;
    }
    if (!cert.sid.empty()) {
      const auto sid = parse_sid(cert.sid);
      if (!sid) {
        r.outcome = verdict::sid_mismatch;
        r.detail = "the SID extension holds no valid SID";
        return r;
      }
      if (*sid != a.object_sid) {
        r.outcome = verdict::sid_mismatch;
        r.detail = "the SID extension names " + cert.sid + ", the account " + a.dn + " is " +
                   (a.object_sid.empty() ? std::string("without objectSid")
                                         : sid_to_string(a.object_sid));
        return r;
      }
      r.via = "SID extension " + cert.sid;
    }
  }
  if (r.via.empty()) {
    r.outcome = verdict::no_strong_mapping;
    r.detail = std::to_string(a.alt_security_identities.size()) +
               " altSecurityIdentities value(s) on " + a.dn + ", " +
               std::to_string(strong_values) +
               " strong, none matching this certificate, and no SID extension; add one of the "
               "strong strings (cbagate --explain-certificate)";
    return r;
  }

  // 2. Account state.
  if ((a.user_account_control & uf_accountdisable) != 0) {
    r.outcome = verdict::disabled;
    r.detail = "userAccountControl " + std::to_string(a.user_account_control) + " has ACCOUNTDISABLE";
    return r;
  }
  const std::int64_t now_ft = filetime_of_unix(now_unix);
  bool locked = false;
  if (a.uac_computed) {
    locked = (*a.uac_computed & uf_lockout) != 0;
  } else if (a.lockout_time > 0) {
    const std::int64_t duration_ft = static_cast<std::int64_t>(lockout_duration.count()) * 10000000LL;
    locked = a.lockout_time > now_ft - duration_ft;
  }
  if (locked) {
    r.outcome = verdict::locked_out;
    r.detail = "account locked out (lockoutTime " + std::to_string(a.lockout_time) + ")";
    return r;
  }
  if (a.account_expires != 0 && a.account_expires != std::numeric_limits<std::int64_t>::max() &&
      a.account_expires <= now_ft) {
    r.outcome = verdict::account_expired;
    r.detail = "accountExpires " + std::to_string(a.account_expires) + " has passed";
    return r;
  }
  r.outcome = verdict::allowed;
  return r;
}

}  // namespace cbagate::directory

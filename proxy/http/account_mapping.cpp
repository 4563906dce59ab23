#include "http/account_mapping.hpp"

#include "identity/ad_certificate.hpp"

namespace cbagate::http {

boost::asio::awaitable<account_mapping> map_account(directory::service& svc,
                                                    const identity::client_identity& id) {
  account_mapping out;
  if (auto cached = svc.try_lookup(id)) {
    out.result = std::move(*cached);
    out.from_cache = true;
  } else {
    identity::client_identity copy = id;
    out.result = co_await svc.async_lookup(std::move(copy));
  }
  if (out.result.outcome == directory::verdict::unavailable) {
    // Fail closed: no directory, no pass (503 + Retry-After from the reply table).
    out.refusal = info_for(reply::directory_unavailable);
  } else if (!out.result.allowed()) {
    out.refusal = mapping_denied(directory::to_string(out.result.outcome));
  }
  co_return out;
}

located_user user_of_located_account(const directory::mapping_result& r, bool kerberos,
                                     std::span<const std::string> upn_suffixes) {
  located_user u;
  if (r.upn.empty()) {
    if (kerberos && !r.sam_account_name.empty()) u.account = r.sam_account_name;
    else u.refusal = "no_upn";  // header mode names users by UPN only
    return u;
  }
  if (!upn_suffixes.empty() && !identity::upn_suffix_allowed(r.upn, upn_suffixes)) {
    u.refusal = "upn_suffix_not_allowed";
    return u;
  }
  u.account = r.upn;
  return u;
}

std::string account_principal(const directory::mapping_result& r, const std::string& realm) {
  if (r.sam_account_name.empty()) return {};
  // A sAMAccountName is a bare name; never one with '@' or '/' (they would name another realm
  // or a service).
  if (r.sam_account_name.find_first_of("@/\\") != std::string::npos) return {};
  return realm.empty() ? r.sam_account_name : r.sam_account_name + "@" + realm;
}

}  // namespace cbagate::http
